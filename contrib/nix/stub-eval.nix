# Evaluate flake.nix against a stub of the few nixpkgs functions it uses (this machine cannot
# fetch nixpkgs), and show the package attributes and the systemd services the NixOS module
# generates. Not a NixOS evaluation: option types, merging and unit rendering are not checked.
#
#   NIX_REMOTE=local nix-instantiate --eval --strict --json --read-write-mode \
#     --expr 'import ./contrib/nix/stub-eval.nix { }'
#
# (--read-write-mode: the trusted keys are written to the store with builtins.toFile, as
# pkgs.writeText would.) Arguments set the module's options: keys, listen, doImport,
# extraArgs, stateDir.
{ flake ? ../../flake.nix
, keys ? [ "ground-1:dpBUepwSaV6p4N59a5DpEh8Lh55QMzIkrQgJpynIWPg=" ]
, listen ? { kind = "udp"; address = "0.0.0.0:7200"; }
, doImport ? true
, extraArgs ? [ ]
, stateDir ? null
}:
let
  escapeShellArg = a: if builtins.match "[[:alnum:],._+:@%/-]+" a != null then a
    else "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] a + "'";
  lib = {
    genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
    mkEnableOption = d: { isOption = true; default = false; description = d; };
    mkOption = o: o // { isOption = true; };
    types = { package = "package"; path = "path"; str = "str"; bool = "bool"; enum = l: { enum = l; };
      listOf = t: { listOf = t; }; ints.positive = "positive int"; };
    literalExpression = s: s;
    getExe = p: "${p}/bin/${p.meta.mainProgram}";
    imap0 = f: l: builtins.genList (i: f i (builtins.elemAt l i)) (builtins.length l);
    concatMap = f: l: builtins.concatLists (map f l);
    optional = c: x: if c then [ x ] else [ ];
    optionalString = c: s: if c then s else "";
    escapeShellArgs = l: builtins.concatStringsSep " " (map escapeShellArg l);
    mkIf = c: x: { _if = c; content = x; };
  };
  pkgsFor = system: {
    inherit lib;
    writeText = builtins.toFile;
    coreutils = "/stub/coreutils";
    pkg-config = "pkg-config"; installShellFiles = "installShellFiles";
    cargo = "cargo"; rustc = "rustc"; clippy = "clippy"; rustfmt = "rustfmt"; nix = "nix"; zstd = "zstd";
    mkShell = a: a;
    stdenv = { hostPlatform.system = system; buildPlatform.canExecute = _: true; };
    rustPlatform.buildRustPackage = a: a // { outPath = "/stub/narlink"; };
  };
  nixpkgs = { lib = lib; legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] pkgsFor; };
  outputs = (import flake).outputs { self = outputs // { outPath = "/stub/src"; }; inherit nixpkgs; };
  pkgs = pkgsFor "x86_64-linux";
  opts = m0.options.services.narlink-device;
  m0 = outputs.nixosModules.default { inherit lib pkgs; config = { }; };
  cfg = {
    enable = true; package = opts.package.default; stateDir = if stateDir == null then opts.stateDir.default else stateDir;
    statusEvery = opts.statusEvery.default; trustedKeys = keys;
    inherit listen extraArgs; import = doImport;
  };
  m = outputs.nixosModules.default { inherit lib pkgs; config = { services.narlink-device = cfg; nix.package = "/stub/nix"; }; };
in {
  package = { inherit (outputs.packages.x86_64-linux.default) pname nativeBuildInputs postInstall; };
  defaults = { listen = { kind = opts.listen.kind.default; address = opts.listen.address.default; };
    import = opts.import.default; statusEvery = opts.statusEvery.default; stateDir = if stateDir == null then opts.stateDir.default else stateDir;
    package = "${opts.package.default}"; };
  enabled = m.config._if;
  assertions = m.config.content.assertions;
  tmpfiles = m.config.content.systemd.tmpfiles.rules;
  init = m.config.content.systemd.services.narlink-device-init;
  device = m.config.content.systemd.services.narlink-device;
  devShell = builtins.length outputs.devShells.aarch64-linux.default.packages;
}
