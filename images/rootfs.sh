#!/usr/bin/env bash
# Assembles the root filesystem of a Switchboard image: the binary, exactly the
# shared libraries it links (as ldd resolves them, with the dynamic loader), the
# CA certificates, and /etc/passwd + /etc/group naming the non-root user 65532.
# No shell, no package manager, nothing else.
#
# Used by both build paths, so they cannot drift: the build stage of each
# images/*/Containerfile runs it, and hack/images.sh (buildah, offline) runs it
# on the locally built binary before building that Containerfile's final stage.
#
#   images/rootfs.sh BINARY NAME OUT_DIR    -> OUT_DIR/usr/local/bin/NAME, ...
set -euo pipefail
[[ $# -eq 3 ]] || { echo "usage: $0 BINARY NAME OUT_DIR" >&2; exit 2; }
bin=$1 name=$2 out=$3
[[ -x "$bin" ]] || { echo "rootfs: $bin is not an executable" >&2; exit 1; }
certs=/etc/ssl/certs/ca-certificates.crt
[[ -s "$certs" ]] || { echo "rootfs: $certs missing (install ca-certificates)" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out/usr/local/bin" "$out/etc/ssl/certs" "$out/tmp"
chmod 1777 "$out/tmp"
install -m 0755 "$bin" "$out/usr/local/bin/$name"

# Every resolved library path of `ldd` (lines "libx.so => /path (addr)" and the
# loader "/lib64/ld-linux-x86-64.so.2 (addr)"), copied with its path; symlinks
# are resolved so the file the loader opens is a regular file.
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u |
  while read -r lib; do
    mkdir -p "$out$(dirname "$lib")"
    cp -L "$lib" "$out$lib"
  done

cp -L "$certs" "$out/etc/ssl/certs/ca-certificates.crt"
cat >"$out/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
cat >"$out/etc/group" <<'GROUP'
root:x:0:
nonroot:x:65532:
GROUP
