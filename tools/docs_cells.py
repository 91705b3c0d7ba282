"""Keep notebook cells in the shape nbdev 2's docs processing expects.

Two rules of `nbdev_docs` (and `nbdev_readme`) that a notebook can break without any error from `nbdev_test`:

1. The first markdown cell with a `# title` becomes the page's front matter and is then dropped: only the title,
   the `> summary` line and `- key: value` lines are kept, so any other text in that cell is lost from the page
   (and a list item such as `- Docs: ...` is read as a front-matter key). Prose belongs in the next cell.
2. To render the API reference, nbdev's `exec_show_docs` runs every exported cell and every other code cell that
   contains an import, whatever else the cell does (nbdev's FAQ: imports in their own cell). An example that imports
   and then trains a model is run again on every docs build, and fails there when it uses a name from a cell that
   is not run. Its top-level imports belong in a cell of their own just above it (same directives), so the example
   keeps its saved outputs and the docs build does not run it; `nbdev_test` runs both cells as before.

    python tools/docs_cells.py [NOTEBOOK ...]           # fix (default: every nbs/*.ipynb); run nbdev_clean after
    python tools/docs_cells.py --check [NOTEBOOK ...]   # list the cells that break a rule; exit 1 if any
"""
import ast, hashlib, json, re, sys, warnings
from pathlib import Path
from execnb.nbio import read_nb
from nbdev.process import extract_directives, first_code_ln
from nbdev.processors import _do_eval

ROOT = Path(__file__).resolve().parent.parent
_EXPORTS = {'export', 'exports', 'exporti'}
_IMPORT = (ast.Import, ast.ImportFrom)
_FM_LINE = re.compile(r'^(#\s+\S.*|>\s+\S.*|-\s+\S.*:.*\S|\s*)$')


def _code(src):
    "Directive lines, code lines and parsed code of a cell source, or None when it does not parse (magics)."
    lines = src.splitlines(True)
    n = first_code_ln(lines)
    try: tree = ast.parse(''.join(lines[n:]))
    except SyntaxError: return None
    return lines[:n], lines[n:], tree


def _title_cell(cells):
    "Index of the markdown cell nbdev takes as front matter (the first one with a `# ` heading), or None."
    return next((i for i, c in enumerate(cells) if c['cell_type'] == 'markdown'
                 and re.search(r'^#\s+\S', ''.join(c['source']), re.M)), None)


def _title_split(src):
    "Front-matter part and the rest of a title cell, or None when the cell holds only front matter."
    lines = src.splitlines(True)
    n = next((i for i, l in enumerate(lines) if not _FM_LINE.match(l.rstrip('\n'))), None)
    if n is None: return None
    return ''.join(lines[:n]).rstrip('\n'), ''.join(lines[n:]).strip('\n')


def _runs_code(c):
    "Does `nbdev_docs` run this non-exported code cell for more than its imports?"
    if c.cell_type != 'code' or c.directives_.keys() & (_EXPORTS | {'exec_doc'}): return False
    with warnings.catch_warnings():   # nbdev warns about such cells; this script reports them itself
        warnings.simplefilter('ignore')
        if not _do_eval(c): return False
    parsed = _code(c.source)
    return parsed is not None and not all(isinstance(s, _IMPORT) for s in parsed[2].body)


def offenders(path):
    "(cell index, what is wrong) for each cell of notebook `path` that breaks one of the two rules."
    nb = read_nb(path)
    res = []
    t = _title_cell(nb.cells)
    if t is not None and _title_split(nb.cells[t].source):
        res.append((t, 'title cell holds more than the title and summary: the rest is not on the page'))
    for c in nb.cells: c.directives_ = extract_directives(c, remove=False) if c.cell_type == 'code' else {}
    if any(c.directives_.keys() & _EXPORTS for c in nb.cells):
        for i, c in enumerate(nb.cells):
            if _runs_code(c):
                first = next((l.strip() for l in _code(c.source)[1] if l.strip()), '')
                res.append((i, f'imports and runs code ({first!r}): nbdev_docs runs it; imports go in their own cell'))
    return res


def _import_split(src):
    "Source of the import cell and of the rest, or None when the imports cannot be moved (nested imports)."
    dirs, code, tree = _code(src)
    if any(isinstance(n, _IMPORT) for s in tree.body if not isinstance(s, _IMPORT) for n in ast.walk(s)): return None
    text, by_line = ''.join(code), {}
    for s in tree.body:
        for ln in range(s.lineno, s.end_lineno + 1): by_line.setdefault(ln, []).append(s)
    imps, rest = [], []
    for ln, line in enumerate(code, 1):
        stmts = by_line.get(ln, [])
        if stmts and all(isinstance(s, _IMPORT) for s in stmts): imps.append(line)
        elif any(isinstance(s, _IMPORT) for s in stmts):   # `import shutil; shutil.rmtree(tmp)`
            seg = lambda imp: '; '.join(ast.get_source_segment(text, s) for s in stmts if isinstance(s, _IMPORT) == imp)
            imps.append(seg(True) + '\n'); rest.append(seg(False) + '\n')
        else: rest.append(line)
    while rest and not rest[0].strip(): rest.pop(0)
    if not imps or not ''.join(rest).strip(): return None
    return ''.join(dirs + imps).rstrip('\n'), ''.join(dirs + rest).rstrip('\n')


def fix_notebook(path):
    "Rewrite notebook `path` so it follows both rules; returns the number of cells split."
    path = Path(path)
    bad = {i for i, _ in offenders(path)}
    if not bad: return 0
    nb = json.loads(path.read_text())
    t = _title_cell(nb['cells'])
    cells, n = [], 0
    for i, c in enumerate(nb['cells']):
        src = ''.join(c['source'])
        parts = None if i not in bad else _title_split(src) if i == t else _import_split(src)
        if not parts:
            cells.append(c); continue
        first, rest = parts
        new = {'cell_type': c['cell_type'], 'id': hashlib.sha1(f'{path.name}{i}{first}'.encode()).hexdigest()[:8],
               'metadata': {}, 'source': first.splitlines(True)}
        if c['cell_type'] == 'code': new.update(execution_count=None, outputs=[])
        c['source'] = rest.splitlines(True)
        cells += [new, c]; n += 1
    nb['cells'] = cells
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_text(json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + '\n')
    tmp.replace(path)
    return n


if __name__ == '__main__':
    args = [a for a in sys.argv[1:] if a != '--check']
    nbs = [Path(a) for a in args] or sorted((ROOT/'nbs').glob('*.ipynb'))
    if '--check' in sys.argv:
        found = [(p, i, w) for p in nbs for i, w in offenders(p)]
        for p, i, w in found: print(f'{p.name} cell {i}: {w}')
        if found: print('fix: python tools/docs_cells.py, then nbdev_clean')
        sys.exit(1 if found else 0)
    for p in nbs:
        n = fix_notebook(p)
        if n: print(f'{p.name}: {n} cell(s) split')
        for i, w in offenders(p): print(f'{p.name} cell {i}: left as it is: {w}')
