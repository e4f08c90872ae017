# Sourced by the scripts that check other programs' failures:
#   expect CODE PATTERN -- command...
# passes when the command exits CODE with PATTERN in its output (stdout and
# stderr); otherwise prints the output and sets failed=1.
expect() {
  local code=$1 pattern=$2; shift 3
  local output status
  output=$("$@" 2>&1); status=$?
  if [[ $status -ne $code || $output != *"$pattern"* ]]; then
    echo "FAIL: '$*' exited $status (expected $code) with output:"; echo "$output"; failed=1
  else
    echo "ok: exit $status, '$pattern' in: ${output%%$'\n'*}"
  fi
}
