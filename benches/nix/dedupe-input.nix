# A store path of real host files that references real store paths, for `benches/dedupe.rs`.
#
#   nix-build benches/nix/dedupe-input.nix --option sandbox false --option substituters "" \
#     --arg deps '[ "/nix/store/...-numpy" ... ]' --arg mib 256
#
# `$out` holds /usr/lib/python3.11 and then the regular files of /usr/lib/x86_64-linux-gnu (in
# name order) until about `mib` MiB, plus, for every dependency, a wrapper script in bin/ and a
# line in nix-support/ naming it: Nix records them as references, and normalization finds
# their hashes there (as it finds them in shebangs, wrappers and RPATHs of real packages).
{ deps, mib ? 256, tag ? "1" }:
derivation {
  name = "narlink-bench-dedupe-${toString mib}mib-${tag}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  deps = map builtins.storePath deps;
  inherit mib;
  args = [ "-c" ''
    set -e
    /bin/mkdir -p $out/lib $out/bin $out/nix-support
    /bin/cp -r /usr/lib/python3.11 $out/lib/python3.11
    /bin/mkdir -p $out/lib/so
    for f in /usr/lib/x86_64-linux-gnu/*; do
      [ -f "$f" ] && [ ! -L "$f" ] || continue
      total=$(/usr/bin/du -sm $out | /usr/bin/cut -f1)
      [ "$total" -lt "$mib" ] || break
      /bin/cp "$f" $out/lib/so/
    done
    i=0
    for d in $deps; do
      printf '#!/bin/sh\nexport PATH=%s/bin:$PATH\nexec %s/bin/run-%s "$@"\n' "$d" "$d" "$i" > $out/bin/run-$i
      /bin/chmod +x $out/bin/run-$i
      echo "$d" >> $out/nix-support/propagated-build-inputs
      i=$((i + 1))
    done
  '' ];
}
