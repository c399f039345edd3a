# Step timing for the test scripts (sourced by scripts/test.sh and scripts/test_web.sh):
# `step NAME` prints NAME with its start (minutes into the run); at exit the seconds each
# step took are printed, also on failure, so a CI log says where its time went (the
# budget: docs/design.md, "Tests and CI time"). STEP_LABEL names the table.
STEP_NAME="" STEP_START=$SECONDS STEP_TIMES=""
step_done() {
  [ -n "$STEP_NAME" ] && STEP_TIMES+="$(printf '%6ds  %s' $((SECONDS - STEP_START)) "${STEP_NAME%% (*}")"$'\n'
  STEP_START=$SECONDS
}
step() { step_done; STEP_NAME="$*"; printf '\n==> [%d min] %s\n' $((SECONDS / 60)) "$*"; }
step_table() { step_done; printf "\n==> %stime per step (total %d s)\n%s" "${STEP_LABEL:-}" "$SECONDS" "$STEP_TIMES"; }
