#!/bin/sh
# Regenerates cmd/portcullis/default.pgo, the CPU profile that Go's
# profile-guided optimisation builds the gateway with (go build's default
# -pgo=auto picks up default.pgo in the main package's directory). The
# profile is the gateway's CPU during portcullis-bench's (a), throughput and
# (c) scenarios, taken through its profiling endpoint
# (PORTCULLIS_PPROF_ADDR). Run from the repository root; measure the new
# build (make bench, or -only tput -against the old one) before committing.
set -eu
GO=${GO:-go}
ADDR=${PGO_ADDR:-127.0.0.1:6061}
OUT=bench/out/pgo
mkdir -p "$OUT"
$GO build -o bench/out/portcullis ./cmd/portcullis
$GO build -o bench/out/portcullis-bench ./bench/cmd/portcullis-bench
PORTCULLIS_PPROF_ADDR=$ADDR bench/out/portcullis-bench run -only pass,tput,stream -out "$OUT" >"$OUT/run.log" 2>&1 &
run=$!
i=0
until curl -sf -o /dev/null "http://$ADDR/debug/pprof/"; do
	i=$((i + 1))
	if [ "$i" -ge 600 ]; then
		echo "pgo: the gateway's profiling endpoint did not come up at $ADDR (see $OUT/run.log)" >&2
		kill "$run"
		exit 1
	fi
	sleep 0.2
done
# The run lasts about 80 s; the profile ends before it does.
curl -sf -o "$OUT/cpu.pprof" "http://$ADDR/debug/pprof/profile?seconds=70"
wait "$run"
cp "$OUT/cpu.pprof" cmd/portcullis/default.pgo
echo "pgo: cmd/portcullis/default.pgo written ($(wc -c <cmd/portcullis/default.pgo) bytes)"
