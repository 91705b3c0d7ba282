"""Write README.md from nbs/index.ipynb without Quarto (a separate binary that pip cannot install).

`nbdev_readme` renders the same notebook through Quarto; where Quarto exists, either gives the README.
Hidden cells (`#| hide`) are left out, directives are stripped, image links are made relative to the
repository root, and text outputs are kept.  `python tools/make_readme.py --check` exits 1 if README.md
is out of date.
"""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NB, README = ROOT/'nbs'/'index.ipynb', ROOT/'README.md'

def _directives(src):
    return {m.group(1) for m in re.finditer(r'^#\|\s*([\w-]+)', src, re.M)}

def render(nb_path=NB):
    nb = json.loads(Path(nb_path).read_text())
    out = ["<!-- Generated from nbs/index.ipynb by tools/make_readme.py (make readme): edit the notebook, not this file. -->", ""]
    for c in nb['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'markdown':
            src = re.sub(r'\]\((?!https?:|/|#)([^)]+)\)', lambda m: f'](nbs/{m.group(1)})', src)
            src = re.sub(r'src="(?!https?:|/)([^"]+)"', lambda m: f'src="nbs/{m.group(1)}"', src)
            out += [src, '']
            continue
        if {'hide', 'default_exp'} & _directives(src): continue
        code = '\n'.join(l for l in src.splitlines() if not l.startswith('#|')).strip()
        lang = 'sh' if code.startswith('!') or code.startswith('%%bash') else 'python'
        if code: out += [f'```{lang}', code.removeprefix('%%bash\n').lstrip('!'), '```', '']
        for o in c.get('outputs', []):
            txt = o.get('text') or o.get('data', {}).get('text/plain')
            if txt: out += ['```', ''.join(txt).rstrip(), '```', '']
    return '\n'.join(out).rstrip() + '\n'

if __name__ == '__main__':
    text = render()
    if '--check' in sys.argv:
        ok = README.exists() and README.read_text() == text
        if not ok: print("README.md is out of date: run `make readme` (it is generated from nbs/index.ipynb)")
        sys.exit(0 if ok else 1)
    tmp = README.with_name('.README.md.tmp'); tmp.write_text(text); tmp.replace(README)
    print(f"wrote {README.relative_to(ROOT)}")
