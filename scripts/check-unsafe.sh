#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Fail if `unsafe` appears in a module file outside the abstraction layer.
# The log logic, the transfer layer and the pure helpers are safe Rust.
. "$(dirname "$0")/lib.sh"

ABSTRACTIONS="bindings.rs compat.rs completion.rs connector.rs delayed_work.rs dirty_log.rs
mempool.rs random.rs spinlock_irq.rs time.rs"

bad=0
for f in "$TOP"/src/*.rs; do
	name=$(basename "$f")
	[ "$name" = bindings_generated.rs ] && continue
	case " $(echo $ABSTRACTIONS) " in *" $name "*) continue ;; esac
	if grep -n -E '\bunsafe\b' "$f" | grep -v -E '^\s*[0-9]+:\s*//'; then
		printf '%s: unsafe outside the abstraction layer\n' "$f" >&2
		bad=1
	fi
done
[ $bad = 0 ] || exit 1
