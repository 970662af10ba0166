#!/bin/sh
# The old approach, kept only as the benchmark's peer: rewrite config.json with jq, then
# exec crun. It makes the same three reductions crun-wrapper makes for the bench spec,
# in a single jq run (the old script used two or three, plus grep checks).
case " $* " in
*" create "* | *" run "*)
	b=.
	prev=
	for a in "$@"; do
		[ "$prev" = --bundle ] && b=$a
		prev=$a
	done
	jq --argjson oom "$(cat /proc/self/oom_score_adj)" --argjson nofile "$(ulimit -H -n)" '
	  .process.oomScoreAdj |= (if . < $oom then $oom else . end)
	  | .process.rlimits |= map(if .hard > $nofile and .type == "RLIMIT_NOFILE"
	                            then .hard = $nofile | .soft = $nofile else . end)
	  | .process.capabilities |= with_entries(.value |= map(select(. != "CAP_SYS_RESOURCE")))
	' "$b/config.json" >"$b/config.json.tmp" && mv "$b/config.json.tmp" "$b/config.json"
	;;
esac
exec /usr/bin/crun "$@"
