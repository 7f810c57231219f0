#!/usr/bin/env python3
"""Sums a massif snapshot's heap by allocation site, per connection.

Usage: heap-per-connection.py SNAPSHOT CONNECTIONS [MIN_BYTES]

SNAPSHOT is a detailed snapshot written by `vgdb detailed_snapshot` (see
scripts/profile-memory.sh). Each allocation site holding at least
MIN_BYTES (default 100) per connection is printed with its bytes per
connection and its three innermost frames outside the allocator and the
collections (`<-` reads "called from"); generic arguments are elided.
Sites below the bound are summed into one line. The heap the process held
before the connections (configuration, store, caches) is in the total but
spread thinly over many sites, so it mostly falls below the bound.
"""
import re
import sys

# Frames that only say how memory was asked for, not what for.
PLUMBING = re.compile(
    r"library/alloc|alloc\.rs|unix\.rs|raw_vec|UnknownInlinedFun|__rdl_alloc|malloc|"
    r"with_capacity|vec/mod\.rs|boxed\.rs|bytes_mut\.rs|bytes/src|reserve|finish_grow|"
    r"spec_from|from_iter|to_vec|slice\.rs|hashbrown|string\.rs|collect|sqlite3Malloc|"
    # tokio's spawn path: the caller that spawned says what the task is.
    r"src/runtime/task/(?!core\.rs)|src/runtime/scheduler/|src/task/spawn\.rs|src/runtime/handle\.rs|spawn_named|spawn_inner"
)
NODE = re.compile(r"(\s*)n\d+: (\d+) (.*)")
FRAMES = 3


def elide_generics(text):
    """`f<A<B>, C>::g` as `f<…>::g`; a leading `<X<A> as Y>` keeps its
    outer brackets, as `<X<…> as Y>`."""
    out, depth, keep_outer = [], 0, text.startswith("<")
    for i, ch in enumerate(text):
        opens_kept = keep_outer and i == 0
        if ch == "<":
            if opens_kept:
                out.append(ch)
            elif depth == (1 if keep_outer else 0):
                out.append("<…>")
            depth += 1
        elif ch == ">" and depth > 0:
            depth -= 1
            if keep_outer and depth == 0:
                out.append(ch)
                keep_outer = False
        elif depth == (1 if keep_outer else 0):
            out.append(ch)
    return "".join(out)


def parse(path):
    lines = open(path).read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("heap_tree=detailed")) + 1
    root, stack = None, []
    for line in lines[start:]:
        match = NODE.match(line)
        if not match:
            if root is not None and line.startswith("#"):
                break
            continue
        indent, size, text = len(match.group(1)), int(match.group(2)), match.group(3)
        text = elide_generics(re.sub(r"0x[0-9A-F]+: ", "", text))
        node = {"size": size, "text": text, "children": []}
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if stack:
            stack[-1][1]["children"].append(node)
        else:
            root = node
        stack.append((indent, node))
    return root


def sites(node, frames, bound, out):
    """(bytes, frames) for each site of at least `bound` bytes."""
    if not PLUMBING.search(node["text"]) and "(heap allocation functions)" not in node["text"]:
        frames = frames + [node["text"]]
    big = [child for child in node["children"] if child["size"] >= bound]
    if len(frames) >= FRAMES or not big:
        out.append((node["size"], frames))
        return
    for child in big:
        sites(child, frames, bound, out)
    rest = node["size"] - sum(child["size"] for child in big)
    if rest >= bound:
        out.append((rest, frames + ["(sites below the bound)"]))


def main():
    path, connections = sys.argv[1], int(sys.argv[2])
    min_bytes = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    root = parse(path)
    found = []
    sites(root, [], min_bytes * connections, found)
    found.sort(key=lambda site: -site[0])
    shown = 0
    for size, frames in found:
        if not frames or frames[-1] == "(sites below the bound)" and len(frames) == 1:
            continue
        shown += size
        print(f"{size / connections:8.0f}  " + "  <-  ".join(frames[:FRAMES]))
    print(f"{(root['size'] - shown) / connections:8.0f}  (everything else, including the heap before the connections)")
    print(f"{root['size'] / connections:8.0f}  total heap ÷ connections")


if __name__ == "__main__":
    main()
