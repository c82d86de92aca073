# Helpers shared by the small bench scripts (fairness.sh, outbound.sh);
# source it, don't run it.

# CPU ticks (user + system) process $1 has used so far; divide by CLK_TCK.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# wrk latency (e.g. 512.00us, 1.20ms, 2.01s) in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000
    printf "%.2f", n }'
}
