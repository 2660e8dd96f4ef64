"""podman's --format Go templates as Gantry renders them (engine/cli/gotemplate.py), against
what podman 4.3 prints for the same template and data on this machine."""

from __future__ import annotations

import pytest

from engine.cli.gotemplate import go_text, render
from engine.errors import InvalidInputError

ROW = {
    "ID": "7b8919e6fbf0",
    "Id": "7b8919e6fbf0992b5fcc21e10abd1a2202caef9bd11709f1b9cd5596742f3eab",
    "Names": "fmtprobe",
    "Status": "Created",
    "Mounts": [],
    "Labels": {"b": "2", "a": "1"},
    "Command": ["sh", "-c", "echo hi"],
    "Pid": 0,
    "Exited": False,
    "State": {"Status": "created", "ExitCode": 0},
    "Env": None,
}


@pytest.mark.parametrize(
    ("template", "printed"),
    [
        ("{{.ID}}", "7b8919e6fbf0"),
        ("{{.Names}} {{.Status}}", "fmtprobe Created"),
        ("{{.State.Status}}", "created"),
        ("{{.Id}}", ROW["Id"]),
        ("{{.id}}", ROW["Id"]),  # a field's case folds, as podman's .Id finds .ID
        ("{{.Mounts}}|{{.Labels}}|{{.Pid}}|{{.Exited}}", "[]|map[a:1 b:2]|0|false"),
        ("{{.Command}}", "[sh -c echo hi]"),
        ("{{json .State}}", '{"Status":"created","ExitCode":0}'),
        ("{{json .Command}}", '["sh","-c","echo hi"]'),
        ('{{index .Labels "a"}}', "1"),
        ("{{index .Command 2}}", "echo hi"),
        ('{{join .Command ","}}', "sh,-c,echo hi"),
        ("{{.Names | upper}}", "FMTPROBE"),
        ("{{.Names|upper}}", "FMTPROBE"),
        ('{{join .Command "|"}}', "sh|-c|echo hi"),  # a pipe in a string is not a pipe
        ('{{join .Command " | " | upper}}', "SH | -C | ECHO HI"),
        ("{{len .Command}}", "3"),
        ("{{range .Command}}<{{.}}>{{end}}", "<sh><-c><echo hi>"),
        ("{{if .Exited}}gone{{else}}here{{end}}", "here"),
        ("{{if .Pid}}pid{{end}}.", "."),
        ("{{.Env}}", "<no value>"),
        ("{{- .ID -}} x", "7b8919e6fbf0x"),
        ("id={{.ID}}\\tname={{.Names}}", "id=7b8919e6fbf0\tname=fmtprobe"),
        ("plain", "plain"),
    ],
)
def test_a_template_prints_what_podman_prints(template: str, printed: str) -> None:
    assert render(template, [ROW]) == printed


def test_a_table_has_a_header_and_columns_as_podmans_tabwriter() -> None:
    rows = [ROW, ROW | {"ID": "0123456789ab", "Names": "a-much-longer-name", "Status": "Up"}]
    printed = render("table {{.ID}}\\t{{.Names}}\\t{{.Status}}", rows, {"ID": "CONTAINER ID"})
    assert printed.splitlines() == [  # as `podman ps -a --format 'table ...'` lays them out
        "CONTAINER ID  NAMES               STATUS",
        "7b8919e6fbf0  fmtprobe            Created",
        "0123456789ab  a-much-longer-name  Up",
    ]
    assert render("table {{.CreatedAt}}", []) == "CREATED AT"


def test_no_items_print_nothing() -> None:
    assert render("{{.ID}}", []) == ""


@pytest.mark.parametrize(
    ("template", "said"),
    [
        ("{{.Nope}}", "can't evaluate field Nope (fields: Command, Env, Exited"),
        ("{{.State.Nope}}", "can't evaluate field Nope"),
        ("{{range .Command}}", "without {{end}}"),
        ("{{end}}", "unexpected {{end}}"),
        ("{{else}}", "outside an {{if}}"),
        ('{{printf "%s" .ID}}', "unsupported 'printf'"),
        ("{{with .State}}{{.Status}}{{end}}", "{{with}} is not supported"),
        ("{{$x := .ID}}", "not supported"),
        ("{{index .Command 9}}", "index of"),
        ("{{json}}", "wrong arguments for json"),
        ("{{}}", "empty command"),
        ("{{.ID | }}", "empty command"),
        ("{{if .Pid}}" * 500 + "{{end}}" * 500, "nested deeper than 50"),
    ],
)
def test_what_is_not_supported_is_said_clearly(template: str, said: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        render(template, [ROW])
    assert said in raised.value.message


def test_values_print_as_go_prints_them() -> None:
    assert go_text({"k": [1, True, None]}) == "map[k:[1 true <no value>]]"
