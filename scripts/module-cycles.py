#!/usr/bin/env python3
"""Import cycles between the modules of each crate named (its src folder): an edge for every
`crate::a::b` and `super::x` path outside comments and test modules; a module and its own
descendants are one. Prints each cycle and exits 1 if there is one. Usage:
scripts/module-cycles.py domain/src commands/src ..."""
import os, re, sys, itertools
def cycles(root):
    mods = {}
    for dp, _, fs in os.walk(root):
        for f in fs:
            if not f.endswith('.rs'): continue
            p = os.path.join(dp, f)
            rel = os.path.relpath(p, root)[:-3].split(os.sep)
            if rel[-1] in ('mod', 'lib', 'main'): rel = rel[:-1]
            mods['::'.join(rel)] = open(p).read()
    names = set(mods)
    def resolve(path):
        parts = path.split('::')
        for n in range(len(parts), 0, -1):
            cand = '::'.join(parts[:n])
            if cand in names: return cand
        return None
    edges = {m: set() for m in mods}
    for m, src in mods.items():
        src = re.sub(r'#\[cfg\(test\)\]\s*mod tests \{.*', '', src, flags=re.S)
        src = re.sub(r'//[^\n]*', '', src)
        for path in re.findall(r'crate::([a-z_][a-z_0-9]*(?:::[a-z_][a-z_0-9]*)*)', src):
            t = resolve(path)
            if t and t != m and not m.startswith(t + '::') and not t.startswith(m + '::'): edges[m].add(t)
        parent = m.rsplit('::', 1)[0] if '::' in m else ''
        for path in re.findall(r'\bsuper::([a-z_][a-z_0-9]*(?:::[a-z_][a-z_0-9]*)*)', src):
            full = (parent + '::' + path) if parent else path
            t = resolve(full)
            if t and t != m and not m.startswith(t + '::') and not t.startswith(m + '::'): edges[m].add(t)
    # Tarjan
    index, low, stack, on, sccs, i = {}, {}, [], set(), [], [0]
    def strong(v):
        index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
        for w in edges[v]:
            if w not in index: strong(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: sccs.append(sorted(comp))
    sys.setrecursionlimit(10000)
    for v in sorted(mods):
        if v not in index: strong(v)
    for c in sccs:
        print(f'{root}: import cycle: ' + ' -> '.join(c))
    return len(sccs)


if __name__ == '__main__':
    found = sum(cycles(root) for root in sys.argv[1:])
    print(f'module cycles: {found} in {len(sys.argv) - 1} crates')
    sys.exit(1 if found else 0)
