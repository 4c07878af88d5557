"""The Python decoder and the C compiler agree on bpf/rsttrace.h, field by field."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import pytest

from tracer.build import bpf_dir
from tracer.layout import LayoutError, layout, parse_header


def _c_layout(tmp_path, struct: str, fields) -> list[tuple[str, int, int]]:
    prog = tmp_path / "off.c"
    body = "\n".join(
        f'printf("%s %zu %zu\\n", "{f.name}", offsetof(struct {struct}, {f.name}), '
        f"sizeof(((struct {struct} *)0)->{f.name}));"
        for f in fields
    )
    prog.write_text(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n"
        f'#include "rsttrace.h"\nint main(void) {{\n{body}\n'
        f'printf("SIZE %zu 0\\n", sizeof(struct {struct}));\nreturn 0;\n}}\n'
    )
    exe = tmp_path / "off"
    subprocess.run(["gcc", f"-I{bpf_dir()}", "-o", str(exe), str(prog)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return [(n, int(o), int(s)) for n, o, s in (line.split() for line in out.splitlines())]


@pytest.mark.skipif(not shutil.which("gcc"), reason="needs gcc to compile the header")
@pytest.mark.parametrize("struct", ["rst_event", "rst_config"])
def test_python_layout_matches_c_compiler(tmp_path, struct):
    L = layout()
    cls = L.ctypes_struct(struct)
    expected = [(f.name, getattr(cls, f.name).offset, getattr(cls, f.name).size) for f in L.structs[struct]]
    expected.append(("SIZE", ctypes.sizeof(cls), 0))
    assert _c_layout(tmp_path, struct, L.structs[struct]) == expected


def test_constants_are_read_from_the_header():
    L = layout()
    assert L.prefixed("RST_EV_")[1] == "CLOSE"
    assert L.constants["RST_SIG_NONE"] == 255
    assert L.constants["RST_REASON_NONE"] == 0xFFFFFFFF


def test_drift_in_syntax_is_refused():
    with pytest.raises(LayoutError, match="cannot parse"):
        parse_header("struct rst_event {\n\tunsigned long x;\n};\n")
