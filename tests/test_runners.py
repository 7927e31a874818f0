"""Runners (issue 7): presets; pipeline.run and pipeline.shard through Beam's portable runner
byte-identical to DirectRunner; the Dataflow job built offline with this project staged; and
pipeline.run reading and writing s3:// (moto's S3 server on a local port, reached by pyarrow's S3 client).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from email.parser import Parser
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import (DebugOptions, GoogleCloudOptions, PipelineOptions, PortableOptions,
                                                  SetupOptions, StandardOptions, WorkerOptions)
from apache_beam.portability.api import beam_runner_api_pb2
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

from pipeline import run as corpus_run
from pipeline import beam_shard, shard
from pipeline.sample_corpus import write_sample
from runners import dataflow, presets, staging
from runners.presets import expand_preset, pipeline_options
from transforms import shard_stages
from transforms import token_shards as ts
from transforms.corpus_stages import SourceFile

REPO = Path(__file__).resolve().parent.parent
RUN_OPTIONS = ["--write-clusters", "--num-shards", "4", "--quiet"]  # near dedup is on by default
SHARD_OPTIONS = ["--seq-len", "32", "--shard-tokens", "4000", "--validation-fraction", "0.1"]
IN_MEMORY = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
DATAFLOW_USER_OPTIONS = ["--project", "koforge-test", "--region", "europe-west4",
                         "--temp_location", "gs://koforge-test-bucket/tmp", "--dry_run=True"]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tree_digest(directory: Path, subdirs: tuple[str, ...]) -> dict[str, str]:
    """sha256 of every file under the given subdirectories, by path relative to `directory`."""
    return {str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
            for subdir in subdirs for path in sorted((directory / subdir).rglob("*")) if path.is_file()}


def train_tokenizer(texts: list[str], directory: Path) -> Path:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=800, special_tokens=SPECIAL_TOKENS))
    # a BERT tokenizer adds [CLS] ... [SEP] as transformers does (tokenizer_training.loading checks that)
    tokenizer.post_processor = processors.BertProcessing(("[SEP]", tokenizer.token_to_id("[SEP]")),
                                                         ("[CLS]", tokenizer.token_to_id("[CLS]")))
    directory.mkdir(parents=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


# ---------------------------------------------------------------- presets


def test_the_default_runner_is_the_in_process_one_never_prism():
    """DirectRunner would switch to the Prism runner on a machine with internet; the default must not."""
    assert pipeline_options([]).view_as(StandardOptions).runner == "FnApiRunner"
    assert pipeline_options(["--runner", "DirectRunner"]).view_as(StandardOptions).runner == "DirectRunner"  # asked


def test_the_in_process_runner_samples_states_without_long_waits():
    """Beam's 200 ms sampler period made each long bundle end with up to 200 ms of idle wait (docs/scale.md)."""
    from apache_beam.runners.worker import statesampler

    from runners.direct import IN_PROCESS_SAMPLING_MS

    pipeline_options([])
    assert statesampler.StateSampler("step", None).sampling_period_ms == IN_PROCESS_SAMPLING_MS == 10


def test_no_preset_leaves_the_arguments_alone():
    args = ["--runner", "DirectRunner", "--direct_num_workers", "2", "--experiments=a"]
    assert expand_preset(args) == args


@pytest.mark.parametrize("name, runner", [("direct", "FnApiRunner"), ("direct-multiprocess", "FnApiRunner"),
                                          ("portable-embedded", "PortableRunner"), ("prism", "PrismRunner")])
def test_local_presets_give_beam_options(name, runner):
    options = PipelineOptions(expand_preset(["--preset", name]))
    assert options.view_as(StandardOptions).runner == runner
    if name == "portable-embedded":
        portable = options.view_as(PortableOptions)
        assert (portable.job_endpoint, portable.environment_type) == ("embed", "LOOPBACK")
    elif name != "prism":
        direct = options.get_all_options()
        expected = ("in_memory", 1) if name == "direct" else ("multi_processing", 0)  # 0: one process per core
        assert (direct["direct_running_mode"], direct["direct_num_workers"]) == expected


def test_dataflow_preset_fills_in_how_and_keeps_the_users_where():
    expanded = expand_preset(["--preset=dataflow", "--project", "p-1", "--region", "us-central1",
                              "--temp_location=gs://b/tmp", "--max_num_workers", "100", "--experiments=use_runner_v2"])
    options = PipelineOptions(expanded)
    cloud, worker = options.view_as(GoogleCloudOptions), options.view_as(WorkerOptions)
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    assert (cloud.project, cloud.region, cloud.temp_location) == ("p-1", "us-central1", "gs://b/tmp")
    assert worker.machine_type == dataflow.MACHINE_TYPE and worker.autoscaling_algorithm == "THROUGHPUT_BASED"
    assert worker.max_num_workers == 100  # the user's value, not the preset's
    assert not any(arg.startswith("--max_num_workers=") for arg in expanded)
    assert sorted(options.view_as(DebugOptions).experiments) == ["shuffle_mode=service", "use_runner_v2"]
    assert options.view_as(SetupOptions).setup_file == str(REPO / "setup.py")


def test_user_experiment_of_the_same_key_and_user_staging_replace_the_presets():
    expanded = expand_preset(["--preset", "dataflow", "--project", "p", "--region", "r", "--temp_location",
                              "gs://b/t", "--experiments", "shuffle_mode=appliance", "--sdk_container_image", "img:1"])
    options = PipelineOptions(expanded)
    assert options.view_as(DebugOptions).experiments == ["shuffle_mode=appliance"]
    assert options.view_as(SetupOptions).setup_file is None  # the image holds the project
    assert options.view_as(WorkerOptions).sdk_container_image == "img:1"


@pytest.mark.parametrize("args, message", [
    (["--preset", "dataflow", "--project", "p", "--region", "r"], "needs --temp_location"),
    (["--preset", "dataflow", "--project", "p", "--region", "r", "--temp_location", "/tmp/x"], "gs://"),
    (["--preset", "dataflow"], "needs --project, --region, --temp_location"),
    (["--preset", "spark"], "needs --spark_master_url or --job_endpoint; start a job server (docker run"),
    (["--preset", "flink", "--parallelism", "4"], "needs --flink_master or --job_endpoint"),
    (["--preset", "dask"], "unknown --preset 'dask'; choose one of direct, direct-multiprocess"),
    (["--preset"], "--preset needs a name"),
    (["--preset", "direct", "--preset=spark"], "given 2 times"),
])
def test_bad_presets_are_clear_errors(args, message):
    with pytest.raises(ValueError) as error:
        expand_preset(args)
    assert message in str(error.value)


@pytest.mark.parametrize("name, master", [("spark", ["--spark_master_url", "spark://m:7077"]),
                                          ("flink", ["--flink_master", "m:8081"])])
def test_cluster_presets_pick_the_runner_and_stage_the_project_for_docker(name, master):
    runner = {"spark": "SparkRunner", "flink": "FlinkRunner"}[name]
    options = PipelineOptions(expand_preset(["--preset", name, *master]))
    assert options.view_as(StandardOptions).runner == runner
    assert options.view_as(PortableOptions).environment_type == "DOCKER"
    assert options.view_as(SetupOptions).setup_file == str(REPO / "setup.py")

    through_job_server = PipelineOptions(expand_preset(["--preset", name, "--job_endpoint", "host:8099"]))
    assert through_job_server.view_as(StandardOptions).runner == "PortableRunner"
    assert through_job_server.view_as(PortableOptions).job_endpoint == "host:8099"

    external = expand_preset(["--preset", name, *master, "--environment_type", "EXTERNAL",
                              "--environment_config", "localhost:50000"])
    assert not any(arg.startswith("--setup_file") for arg in external)  # the worker pool has koforge installed
    assert PipelineOptions(external).view_as(PortableOptions).environment_type == "EXTERNAL"


def test_staging_without_a_source_checkout_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr(staging, "SETUP_FILE", tmp_path / "setup.py")
    with pytest.raises(ValueError, match="--sdk_container_image"):
        expand_preset(["--preset", "dataflow", "--project", "p", "--region", "r", "--temp_location", "gs://b/t"])


def test_presets_command_lists_and_expands(capsys):
    listing = subprocess.run([sys.executable, "-m", "runners.presets"], cwd=REPO, capture_output=True, text=True)
    assert listing.returncode == 0
    assert all(f"  {name} " in listing.stdout for name in presets.PRESETS)
    assert presets.main(["--preset", "portable-embedded"]) == 0
    assert capsys.readouterr().out.split() == ["--runner=PortableRunner", "--job_endpoint=embed",
                                               "--environment_type=LOOPBACK"]
    assert presets.main(["--preset", "flink"]) == 2
    assert "--flink_master" in capsys.readouterr().err


# ---------------------------------------------------------------- portable runner == DirectRunner


@pytest.fixture(scope="module")
def corpus_runs(tmp_path_factory) -> dict:
    """pipeline.run on the sample corpus with near dedup: on DirectRunner and on the portable runner (embedded)."""
    base = tmp_path_factory.mktemp("runs")
    runs = {}
    for name, beam_args in (("direct", []), ("portable", expand_preset(["--preset", "portable-embedded"]))):
        output = base / name
        runs[name] = (output, corpus_run.run(["--output", str(output), *RUN_OPTIONS, *beam_args]))
    return runs


def test_pipeline_run_on_the_portable_runner_is_byte_identical(corpus_runs):
    (direct, direct_stats), (portable, portable_stats) = corpus_runs["direct"], corpus_runs["portable"]
    digest = tree_digest(direct, ("clean", "rejected", "clusters"))
    assert len([name for name in digest if name.startswith("clean/")]) == 4
    assert any(name.startswith("clusters/") for name in digest) and any(n.startswith("rejected/") for n in digest)
    assert tree_digest(portable, ("clean", "rejected", "clusters")) == digest
    assert direct_stats["dropped"]["near_duplicate"] == portable_stats["dropped"]["near_duplicate"] > 0
    for key in ("input_records", "output_records", "dropped", "near_dedup"):
        assert portable_stats[key] == direct_stats[key]


@pytest.fixture(scope="module")
def shard_runs(corpus_runs, tmp_path_factory) -> dict:
    """pipeline.shard of the direct run's clean corpus: DirectRunner in memory, and the portable runner."""
    import pyarrow.parquet as pq

    corpus = corpus_runs["direct"][0]
    texts = [text for path in sorted((corpus / "clean").glob("*.parquet"))
             for text in pq.read_table(path).column("text").to_pylist()]
    base = tmp_path_factory.mktemp("shards")
    tokenizer = train_tokenizer(texts, base / "tokenizer")
    outputs = {}
    for name, beam_args in (("direct", IN_MEMORY), ("portable", expand_preset(["--preset", "portable-embedded"]))):
        outputs[name] = base / name
        code = shard.main(["--input", str(corpus), "--tokenizer", str(tokenizer), "--output", str(outputs[name]),
                           *SHARD_OPTIONS, "--quiet", *beam_args])
        assert code == 0
    return outputs


def test_pipeline_shard_on_the_portable_runner_is_byte_identical(shard_runs):
    manifest = ts.load_manifest(str(shard_runs["direct"]))
    assert len(manifest["splits"]["train"]["shards"]) >= 2 and manifest["splits"]["validation"]["sequences"] > 0
    digest = tree_digest(shard_runs["direct"], (".",))
    assert tree_digest(shard_runs["portable"], (".",)) == digest
    assert ts.load_manifest(str(shard_runs["portable"])) == manifest


def test_both_commands_take_a_preset(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_status:  # pipeline.run's --preset is an argparse choice
        corpus_run.main(["--input", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "out"),
                         "--preset", "nope"])
    assert exit_status.value.code == 2 and "argument --preset: invalid choice: 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_status:  # pipeline.shard's --preset is an argparse choice
        shard.main(["--input", str(tmp_path / "missing"), "--tokenizer", str(tmp_path / "tok"),
                    "--output", str(tmp_path / "shards"), "--preset", "nope"])
    assert exit_status.value.code == 2 and "argument --preset: invalid choice: 'nope'" in capsys.readouterr().err


# ---------------------------------------------------------------- Dataflow, offline


@pytest.fixture()
def offline_google_auth(monkeypatch):
    """Any credential or metadata lookup goes to a closed loopback port, never to a network."""
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "")


def dataflow_dry_run(build, *extra: str):
    """Build a pipeline with the dataflow preset and run DataflowRunner with --dry_run: the job, not submitted."""
    pytest.importorskip("apache_beam.runners.dataflow.internal.apiclient", reason="needs the test extra (gcp clients)")
    options = pipeline_options(["--preset", "dataflow", *DATAFLOW_USER_OPTIONS, *extra])
    pipeline = beam.Pipeline(options=options)
    build(pipeline)
    return pipeline.run().job


def staged_files(job) -> dict[str, str]:
    """Staged name -> local file of every artifact the job would upload with its SDK environment."""
    files = {}
    for environment in job.proto_pipeline.components.environments.values():
        for artifact in environment.dependencies:
            name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(artifact.role_payload).staged_name
            files[name] = beam_runner_api_pb2.ArtifactFilePayload.FromString(artifact.type_payload).path
    return files


def test_dataflow_job_for_pipeline_run_is_built_with_the_project_staged(offline_google_auth):
    from apache_beam.runners.dataflow.internal import apiclient

    from pipeline import beam_run

    args, _ = corpus_run.parse_arguments(["--output", "gs://koforge-test-bucket/corpus", "--write-clusters"])
    settings = corpus_run.run_settings(args, "gs://koforge-test-bucket/corpus/_temporary", 64)
    sources = [SourceFile(f"gs://koforge-test-bucket/raw/part-{i}.jsonl.gz", f"part-{i}.jsonl.gz", "jsonl")
               for i in range(3)]
    job = dataflow_dry_run(lambda pipeline: beam_run.build_graph(pipeline, sources, settings))

    assert job.proto.type_.name == "JOB_TYPE_BATCH"
    transforms = job.proto_pipeline.components.transforms.values()
    names = {t.unique_name for t in transforms}
    rounds = settings.near.rounds  # the distributed components: that many unrolled rounds, then Finish
    assert {"GroupByPartition", "GroupByBandPartition", "Contract1", f"Contract{rounds}", "Finish", "JoinClusters",
            "Write", "WriteRejected"} <= names and f"Contract{rounds + 1}" not in names
    environments = job.proto_pipeline.components.environments
    used = {t.environment_id for t in transforms if t.environment_id}
    assert used and all(environments[e].urn == "beam:env:docker:v1" for e in used)
    image = beam_runner_api_pb2.DockerPayload.FromString(environments[used.pop()].payload).container_image
    assert image.endswith(f"beam_python{sys.version_info[0]}.{sys.version_info[1]}_sdk:{beam.__version__}")

    # The worker pool Dataflow would be asked for (the request body the runner sends, built offline).
    request = apiclient.Environment(packages=sorted(staged_files(job)), options=job.options, environment_version="8",
                                    proto_pipeline_staged_url="gs://koforge-test-bucket/tmp/pipeline.pb",
                                    proto_pipeline=job.proto_pipeline).proto
    pool = request.worker_pools[0]
    assert pool.machine_type == dataflow.MACHINE_TYPE
    assert pool.autoscaling_settings.max_num_workers == dataflow.MAX_NUM_WORKERS
    assert pool.autoscaling_settings.algorithm.name == "AUTOSCALING_ALGORITHM_BASIC"  # THROUGHPUT_BASED
    assert "shuffle_mode=service" in request.experiments
    assert "workflow.tar.gz" in {package.name for package in pool.packages}


def test_dataflow_staged_package_holds_the_project_and_its_dependencies(corpus_runs, offline_google_auth):
    corpus = corpus_runs["direct"][0]
    units, _ = shard_stages.plan_units(sorted(str(path) for path in (corpus / "clean").glob("*.parquet")), "text")
    settings = shard_stages.ShardSettings(inputs=("gs://koforge-test-bucket/corpus",),
                                          tokenizer="gs://koforge-test-bucket/tok",
                                          output="gs://koforge-test-bucket/shards",
                                          special_tokens={"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4})
    job = dataflow_dry_run(lambda pipeline: beam_shard.build_pipeline(pipeline, units, settings))
    assert {"Tokenize", "GroupBuckets", "PackAndWrite", "WriteIndex"} <= {
        t.unique_name for t in job.proto_pipeline.components.transforms.values()}

    sdist = staged_files(job)["workflow.tar.gz"]  # what Beam's stager built from setup.py, as workers get it
    with tarfile.open(sdist) as archive:
        members = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
        pkg_info_member = next(m for m in archive.getmembers()
                               if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO"))
        pkg_info = Parser().parsestr(archive.extractfile(pkg_info_member).read().decode("utf-8"))
    assert {"setup.py", "pyproject.toml", "pipeline/run.py", "pipeline/shard.py", "pipeline/beam_shard.py",
            "transforms/shard_stages.py", "transforms/special_tokens.py", "pipeline/beam_run.py",
            "transforms/corpus_stages.py", "transforms/drop_reasons.py",
            "transforms/minhash.py", "transforms/components.py", "transforms/token_shards.py",
            "runners/presets.py"} <= members
    assert pkg_info["Name"] == "koforge"
    required = {requirement.split(">")[0].split("=")[0].split("<")[0].split(";")[0].strip().lower()
                for requirement in pkg_info.get_all("Requires-Dist") if "extra ==" not in requirement}
    assert {"apache-beam", "emoji", "tokenizers", "pyarrow", "numpy", "scipy", "zstandard"} <= required
    assert not {"soynlp", "datasketch", "smart-open"} & required  # tests' and benchmarks' only: not on workers


# ---------------------------------------------------------------- s3:// end to end


@pytest.fixture()
def s3_server(monkeypatch):
    """moto's S3 on a local port; AWS_ENDPOINT_URL sends pyarrow's S3 client (and boto3) there, never to AWS."""
    server_module = pytest.importorskip("moto.server", reason="needs the test extra (moto[s3,server])")
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
                       "AWS_SHARED_CREDENTIALS_FILE": os.devnull}.items():
        monkeypatch.setenv(key, value)
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")  # pyarrow >= 15 and boto3 read it
    yield
    server.stop()


def test_pipeline_run_reads_and_writes_s3(corpus_runs, tmp_path, s3_server):
    import boto3

    local = tmp_path / "sample_comments.jsonl"
    write_sample(local)  # the file the local runs read: same name, same bytes
    direct, direct_stats = corpus_runs["direct"]
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="corpus")
    s3.upload_file(str(local), "corpus", "raw/sample_comments.jsonl")
    s3.put_object(Bucket="corpus", Key="out/clean/part-00009-of-00010.parquet", Body=b"an earlier run")
    argv = ["--input", "s3://corpus/raw/*.jsonl", "--output", "s3://corpus/out", *RUN_OPTIONS]
    with pytest.raises(corpus_run.UsageError, match="already holds"):
        corpus_run.run(argv)
    stats = corpus_run.run([*argv, "--overwrite"])
    # pyarrow's S3 client marks the directories it creates with empty "dir/" objects: the files are the rest.
    keys = sorted(item["Key"] for item in s3.list_objects_v2(Bucket="corpus", Prefix="out/")["Contents"]
                  if not item["Key"].endswith("/") or item["Size"])
    expected = tree_digest(direct, ("clean", "rejected", "clusters"))
    assert keys == sorted([f"out/{name}" for name in expected] + ["out/stats.json"])
    for name, digest in expected.items():
        body = s3.get_object(Bucket="corpus", Key=f"out/{name}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == digest, name
    assert stats["output_records"] == direct_stats["output_records"]
    assert sorted(stats["files"]["output"]) == [f"s3://corpus/out/{name}" for name in sorted(expected)]
