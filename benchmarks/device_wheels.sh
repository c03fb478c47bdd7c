#!/usr/bin/env bash
# Wheels for a GPU machine that has Python 3.12, JAX and the scientific stack (numpy, pandas, scikit-learn,
# matplotlib, OpenCV, PyYAML, tqdm) but not Keras or the notebook runner: downloads them into .whl/ (git-ignored
# through .git/info/exclude), where benchmarks/device_check.sh installs them without an index.
#
#   bash benchmarks/device_wheels.sh          # here, with pip and the package index; about 16 MB
#
# The pins are the versions the GPU check last ran with (Keras 3.15.1, papermill 2.7.0 and what they need).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
EXCLUDE=$(git rev-parse --git-path info/exclude)  # also in a worktree, where .git is a file
mkdir -p "$(dirname "$EXCLUDE")"
grep -qx '/.whl/' "$EXCLUDE" 2>/dev/null || echo '/.whl/' >> "$EXCLUDE"
PINS=(
    keras==3.15.1 namex==0.1.0 optree==0.20.0
    papermill==2.7.0 ansicolors==1.1.8 click==8.5.1 entrypoints==0.4.2 tenacity==9.2.1
    nbclient==0.11.0 nbformat==5.11.1 fastjsonschema==2.22.3 jsonschema==4.26.0
    jsonschema_specifications==2025.9.1 referencing==0.37.0 rpds_py==2026.9.1
    jupyter_client==8.10.0 jupyter_core==5.9.1 platformdirs==4.14.8 pyzmq==27.3.0 tornado==6.6.1 traitlets==5.16.1
    ipykernel==7.4.0 comm==0.2.3 debugpy==1.8.22 matplotlib_inline==0.2.2 nest_asyncio2==1.7.4
    ipython==9.18.1 ipython_pygments_lexers==1.1.1 asttokens==3.0.2 decorator==5.3.1 executing==2.3.0
    jedi==0.20.1 parso==0.8.7 pexpect==4.9.0 ptyprocess==0.7.0 prompt_toolkit==3.0.53 pure_eval==0.2.4
    stack_data==0.6.3 wcwidth==0.9.4
)
PLATFORMS=()
for p in manylinux_2_34_x86_64 manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_26_x86_64 \
    manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$p")
done
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d .whl "${PINS[@]}"
echo "$(ls .whl/*.whl | wc -l) wheels in .whl/ ($(du -sh .whl | cut -f1)); carry .whl in the device call"
