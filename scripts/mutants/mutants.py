#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Reads scripts/mutants/list (its format is described at its top) for
scripts/mutants.sh.

  mutants.py table LIST          one line per mutant, tab-separated:
                                 name, file, killers (space-separated),
                                 equivalence reason (or -)
  mutants.py check LIST ROOT     every mutant applies to the tree at ROOT
  mutants.py apply LIST NAME ROOT  applies mutant NAME to the tree at ROOT

A mutant whose original text is not in its file exactly once is an error:
a stale mutant must never pass for a survivor or a kill."""

import sys


def unescape(text):
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "n\\":
            out.append("\n" if text[i + 1] == "n" else "\\")
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parse(path):
    mutants, cur = [], None
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                cur = None if not line.strip() else cur
                continue
            key, sep, value = line.partition(":")
            if not sep:
                sys.exit(f"{path}:{lineno}: expected 'key: value'")
            key, value = key.strip(), value[1:] if value.startswith(" ") else value
            if key == "mutant":
                cur = {"name": value, "file": None, "subs": [], "kill": [],
                       "equivalent": None, "line": lineno}
                if any(m["name"] == value for m in mutants):
                    sys.exit(f"{path}:{lineno}: mutant {value} listed twice")
                mutants.append(cur)
            elif cur is None:
                sys.exit(f"{path}:{lineno}: '{key}' outside a mutant block")
            elif key == "file":
                cur["file"] = value
            elif key == "from":
                cur["subs"].append([unescape(value), None])
            elif key == "to":
                if not cur["subs"] or cur["subs"][-1][1] is not None:
                    sys.exit(f"{path}:{lineno}: 'to' without its 'from'")
                cur["subs"][-1][1] = unescape(value)
            elif key == "kill":
                cur["kill"] = value.split()
            elif key == "equivalent":
                cur["equivalent"] = value
            else:
                sys.exit(f"{path}:{lineno}: unknown key '{key}'")
    for m in mutants:
        where = f"{path}:{m['line']}: mutant {m['name']}"
        if not m["file"] or not m["subs"] or any(t is None for _, t in m["subs"]):
            sys.exit(f"{where}: needs a file and from/to pairs")
        if not m["kill"] and not m["equivalent"]:
            sys.exit(f"{where}: needs killers or an equivalence reason")
        for k in m["kill"]:
            if not (k.startswith("host:") or k.startswith("guest:")):
                sys.exit(f"{where}: killer '{k}' is neither host:<crate> nor guest:<test>")
    return mutants


def mutate(m, root):
    path = f"{root}/{m['file']}"
    with open(path, encoding="utf-8") as f:
        text = f.read()
    # Every original text is looked up in the unmutated file.
    spans = []
    for old, new in m["subs"]:
        n = text.count(old)
        if n != 1:
            sys.exit(f"stale mutant {m['name']}: {m['file']} holds its original text "
                     f"{n} times, not once: {old!r}")
        start = text.index(old)
        spans.append((start, start + len(old), new))
    spans.sort()
    if any(a[1] > b[0] for a, b in zip(spans, spans[1:])):
        sys.exit(f"mutant {m['name']}: its original texts overlap")
    for start, end, new in reversed(spans):
        text = text[:start] + new + text[end:]
    return path, text


def main():
    cmd, path = sys.argv[1], sys.argv[2]
    mutants = parse(path)
    if cmd == "table":
        for m in mutants:
            print("\t".join([m["name"], m["file"], " ".join(m["kill"]) or "-",
                             m["equivalent"] or "-"]))
    elif cmd == "check":
        for m in mutants:
            mutate(m, sys.argv[3])
    elif cmd == "apply":
        m = next((m for m in mutants if m["name"] == sys.argv[3]), None)
        if m is None:
            sys.exit(f"no mutant {sys.argv[3]} in {path}")
        dest, text = mutate(m, sys.argv[4])
        with open(dest, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
