"""Every reason a line or document is dropped: the one definition of their names.

The names are the keys of stats.json's `dropped` (pipeline.run), of Beam's `koforge`
counters and of tokenizer_report.json's drop counts (pipeline.tokenize), so a reader can
add them up: nothing disappears without a counter. What each one means is in
docs/run.md (Drop reasons).
"""
from __future__ import annotations

# Lines that are not records: counted, and written to DIR/rejected/ with an excerpt.
INVALID_UTF8 = "invalid_utf8"
UNDECODABLE = "undecodable"  # not text in the --encoding given (cp949, euc-kr); invalid_utf8 for utf-8
MALFORMED_JSON = "malformed_json"
NOT_AN_OBJECT = "json_not_an_object"
MISSING_TEXT = "missing_text"
TEXT_NOT_STRING = "text_not_string"
MALFORMED_ROW = "malformed_row"
BAD_QUOTING = "bad_quoting"  # --quoting rfc4180: a line opening a quoted field that does not close into a record
LINE_TOO_LONG = "line_too_long"
READ_ERROR = "read_error"
BAD_FIELD = "bad_field"
BAD_ID = "bad_id"
# Records dropped on the way (counted only: rejected/ would repeat the corpus).
BLANK_LINE = "blank_line"
EMPTY_AFTER_CLEAN = "empty_after_clean"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"

# pipeline.run's reasons in the order of the data's path: stats.json lists them in this order.
DROP_REASONS = (INVALID_UTF8, UNDECODABLE, MALFORMED_JSON, NOT_AN_OBJECT, MISSING_TEXT, TEXT_NOT_STRING,
                MALFORMED_ROW, BAD_QUOTING, BAD_ID, BAD_FIELD, LINE_TOO_LONG, READ_ERROR, BLANK_LINE,
                EMPTY_AFTER_CLEAN, TOO_SHORT, TOO_LONG, EXACT_DUPLICATE, NEAR_DUPLICATE)
# The reasons of records that never became one (not read, decoded or parsed): a run where every record
# ends in one of these read nothing usable.
UNREADABLE = (INVALID_UTF8, UNDECODABLE, MALFORMED_JSON, NOT_AN_OBJECT, MISSING_TEXT, TEXT_NOT_STRING, MALFORMED_ROW,
              BAD_QUOTING, BAD_ID, BAD_FIELD, LINE_TOO_LONG, READ_ERROR, BLANK_LINE)

# pipeline.tokenize's reasons for documents of a corpus it reads (besides the line-level ones above).
NULL_TEXT = "null_text"
EMPTY_TEXT = "empty_text"
INVALID_UNICODE = "invalid_unicode"  # a JSON \ud800 escape: a lone surrogate no encoder accepts
