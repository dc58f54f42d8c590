import json

from pybpfload.tools import output


def test_terminal_escapes_and_newlines_are_escaped():
    hostile = b"evil\x1b[2J\x1b]0;title\x07\nforged line\r\xff\xfe"
    shown = output.safe(hostile)
    assert "\x1b" not in shown and "\n" not in shown and "\r" not in shown and "\x07" not in shown
    assert "\\x1b[2J" in shown and "\\n" in shown and "\\xff" in shown


def test_bidi_override_is_escaped():
    assert output.safe("a\u202eb") == "a\\u202eb"


def test_backslash_is_doubled_so_escapes_cannot_be_forged():
    assert output.safe("a\\x1b") == "a\\\\x1b"


def test_json_line_is_valid_for_invalid_utf8_and_controls():
    line = output.json_line({"comm": b"\xff\x1b[31mred", "args": [b"a\nb"], "n": None})
    assert "\n" not in line
    back = json.loads(line)
    assert back["comm"] == "\\xff\x1b[31mred"
    assert back["args"] == ["a\nb"]
    assert back["n"] is None


def test_table_pads_columns():
    import io
    out = io.StringIO()
    t = output.Table([("PID", 7), ("COMM", 6), ("ARGS", None)], out)
    t.header()
    t.row(["1", "sh\n", "x y"])
    lines = out.getvalue().splitlines()
    assert lines[0] == "PID     COMM   ARGS"
    assert lines[1] == "1       sh\\n   x y"
