# A "rebuilt" shared library for the patch test: version 1 is Debian's libcrypto.so.3 as it
# is; version 2 is the same bytes with 100 bytes inserted at 1 MiB and every 64th 32-bit word
# after 64 KiB moved by 0x40, the way a relink moves addresses. The packer should pick
# bsdiff-style patches for it.
#
#   nix-build tests/nix/relocated.nix --arg version 2 --option sandbox false --option substituters ""
{ version ? 1 }:
derivation {
  name = "relocated-lib-${toString version}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" ''
    /bin/mkdir -p $out/lib
    /usr/bin/python3 - <<'PY'
import os, struct
b = bytearray(open("/usr/lib/x86_64-linux-gnu/libcrypto.so.3", "rb").read())
if ${toString version} >= 2:
    b[1 << 20:1 << 20] = bytes(range(100))
    for i in range(1 << 16, len(b) - 4, 64):
        (w,) = struct.unpack_from("<I", b, i)
        struct.pack_into("<I", b, i, (w + 0x40) & 0xFFFFFFFF)
open(os.environ["out"] + "/lib/libcrypto.so.3", "wb").write(b)
PY
  '' ];
}
