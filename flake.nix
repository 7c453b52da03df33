{
  description = "narlink: ship Nix store updates to devices behind a lossy, intermittent uplink";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAll (pkgs: rec {
        narlink = pkgs.rustPlatform.buildRustPackage {
          pname = "narlink";
          version = "0.1.0";
          src = self;
          cargoLock.lockFile = ./Cargo.lock;
          nativeBuildInputs = [ pkgs.pkg-config ];
          # The end-to-end tests need a writable Nix store; run them outside the sandbox.
          doCheck = false;
          meta = {
            description = "Ship Nix store updates to devices behind a lossy, intermittent uplink";
            mainProgram = "narlink";
          };
        };
        default = narlink;
      });

      devShells = forAll (pkgs: {
        default = pkgs.mkShell {
          packages = [ pkgs.cargo pkgs.rustc pkgs.clippy pkgs.rustfmt pkgs.nix pkgs.zstd ];
        };
      });
    };
}
