# Incompressible bytes for the tests of forged frames inside large payloads: version 1 holds
# 1 KiB, version 2 holds 400 KiB of a seeded pseudo-random stream (new bytes with nothing on
# board to be a delta against, so they travel as payloads of whole chunks).
#
#   nix-build tests/nix/noise.nix --arg version 2 --option sandbox false --option substituters ""
{ version ? 1 }:
derivation {
  name = "noise-${toString version}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" ''
    set -eu
    /bin/mkdir -p $out
    /usr/bin/python3 -c '
import os, random
n = 1024 if ${toString version} == 1 else 400 << 10
open(os.environ["out"] + "/noise", "wb").write(random.Random(${toString version}).randbytes(n))
'
  '' ];
}
