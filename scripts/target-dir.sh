# Sourced by the bench scripts: sets TARGET_DIR to the directory cargo builds into, as an absolute
# path, honouring CARGO_TARGET_DIR (relative to the current directory, as cargo reads it) and
# `build.target-dir` in a cargo config. Run it from the repository's root.
TARGET_DIR=$(cargo metadata --no-deps --format-version 1 --offline 2>/dev/null |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
if [ -z "$TARGET_DIR" ]; then
  # cargo metadata failed (it says why when run by hand): fall back on the variable or the default.
  TARGET_DIR=${CARGO_TARGET_DIR:-target}
  case $TARGET_DIR in /*) ;; *) TARGET_DIR=$PWD/$TARGET_DIR ;; esac
fi
export TARGET_DIR
