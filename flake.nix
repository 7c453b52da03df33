{
  description = "narlink: ship Nix store updates to devices behind a lossy, intermittent uplink";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  # Not built here: this repository's CI cannot fetch nixpkgs and only checks that this file
  # parses (`nix-instantiate --parse flake.nix`). contrib/README.md says what was tried.
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
          nativeBuildInputs = [ pkgs.pkg-config pkgs.installShellFiles ];
          # The end-to-end tests need a writable Nix store; run them outside the sandbox.
          doCheck = false;
          # Completions and man pages come from the built binary (`narlink completions`,
          # `narlink man`), so they need a binary this platform can run.
          postInstall = pkgs.lib.optionalString
            (pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform) ''
            installShellCompletion --cmd narlink \
              --bash <($out/bin/narlink completions bash) \
              --zsh <($out/bin/narlink completions zsh) \
              --fish <($out/bin/narlink completions fish)
            $out/bin/narlink man --out man-pages >/dev/null
            installManPage man-pages/*.1
          '';
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

      # The device daemon on NixOS: the same service as contrib/systemd/narlink-device.service,
      # plus a oneshot that creates the state (trusting `trustedKeys`) on first boot.
      nixosModules.default = { config, lib, pkgs, ... }:
        let
          cfg = config.services.narlink-device;
          exe = lib.getExe cfg.package;
          keyFiles = lib.imap0
            (i: key: pkgs.writeText "narlink-trusted-key-${toString i}.pk" key)
            cfg.trustedKeys;
          trustArgs = lib.concatMap (f: [ "--trust" "${f}" ]) keyFiles;
          # The supervisor runs `device listen` from the profile's live generation and
          # switches back when an update is not confirmed (docs/operations.md, section 9).
          listenArgs = [
            exe "device" "supervise"
            "--state" cfg.stateDir
            "--profile" cfg.profile
            "--"
            "--${cfg.listen.kind}" cfg.listen.address
            "--status-out" "${cfg.stateDir}/status.bin"
            "--status-every" (toString cfg.statusEvery)
          ] ++ lib.optional cfg.import "--import" ++ cfg.extraArgs;
        in
        {
          options.services.narlink-device = {
            enable = lib.mkEnableOption "the narlink device daemon (receives Nix store updates from the uplink)";

            package = lib.mkOption {
              type = lib.types.package;
              default = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
              defaultText = lib.literalExpression "narlink.packages.\${system}.default";
              description = "The narlink package.";
            };

            stateDir = lib.mkOption {
              type = lib.types.path;
              default = "/var/lib/narlink";
              description = "The device state (`narlink device init --state`); the status report is kept in it as status.bin.";
            };

            listen = {
              kind = lib.mkOption {
                type = lib.types.enum [ "udp" "tcp" "unix" ];
                default = "udp";
                description = "How frames arrive: UDP datagrams, or a byte stream over TCP or a Unix-domain socket.";
              };
              address = lib.mkOption {
                type = lib.types.str;
                default = "0.0.0.0:7200";
                example = "/run/narlink/frames.sock";
                description = "ADDRESS:PORT for udp and tcp, a socket path for unix.";
              };
            };

            trustedKeys = lib.mkOption {
              type = lib.types.listOf lib.types.str;
              example = [ "ground-1:dpBUepwSaV6p4N59a5DpEh8Lh55QMzIkrQgJpynIWPg=" ];
              description = ''
                Public keys (Nix's `NAME:BASE64`, as `nix-store --generate-binary-cache-key`
                writes them) whose signed bundles the device accepts. Passed with --trust when
                the state is created, and added with `narlink device trust` at every start (a key
                removed here stays trusted by an existing state).
              '';
            };

            import = lib.mkOption {
              type = lib.types.bool;
              default = true;
              description = ''
                Import every bundle's paths as soon as their data is complete (`--import`). The
                daemon does not switch a profile: with activation and rollback, set this to false
                and run `narlink device import --profile ... --activate ...` with the daemon stopped.
              '';
            };

            statusEvery = lib.mkOption {
              type = lib.types.ints.positive;
              default = 60;
              description = "Rewrite the status report at least this often, in seconds.";
            };

            profile = lib.mkOption {
              type = lib.types.str;
              default = "/nix/var/nix/profiles/narlink";
              description = "The profile whose live generation's bin/narlink the supervisor runs (give the same to `--profile` in extraArgs to land updates there).";
            };

            extraArgs = lib.mkOption {
              type = lib.types.listOf lib.types.str;
              default = [ ];
              example = [ "--quiet" ];
              description = "More arguments for `narlink device listen`.";
            };
          };

          config = lib.mkIf cfg.enable {
            assertions = [{
              assertion = cfg.trustedKeys != [ ];
              message = "services.narlink-device.trustedKeys is empty: the device would refuse every bundle.";
            }];

            environment.systemPackages = [ cfg.package ];

            systemd.tmpfiles.rules = [ "d ${cfg.stateDir} 0700 root root -" ];

            systemd.services.narlink-device-init = {
              description = "narlink: create the device state and index the Nix store";
              wantedBy = [ "multi-user.target" ];
              before = [ "narlink-device.service" ];
              after = [ "nix-daemon.service" "systemd-tmpfiles-setup.service" ];
              path = [ config.nix.package ];
              unitConfig.ConditionPathExists = "!${cfg.stateDir}/device.redb";
              serviceConfig = {
                Type = "oneshot";
                RemainAfterExit = true;
                ExecStart = lib.escapeShellArgs ([ exe "device" "init" "--state" cfg.stateDir ] ++ trustArgs);
              };
            };

            systemd.services.narlink-device = {
              description = "narlink device daemon (Nix store updates from the uplink)";
              wantedBy = [ "multi-user.target" ];
              wants = [ "network-online.target" ];
              requires = [ "narlink-device-init.service" ];
              after = [ "network-online.target" "nix-daemon.service" "narlink-device-init.service" ];
              path = [ config.nix.package ];
              startLimitIntervalSec = 0;
              serviceConfig = {
                Type = "simple";
                ExecStartPre = lib.escapeShellArgs ([ exe "device" "trust" "--state" cfg.stateDir ] ++ map toString keyFiles);
                ExecStart = lib.escapeShellArgs listenArgs;
                ExecReload = "${pkgs.procps}/bin/pkill -USR1 -P $MAINPID";
                Restart = "always";
                RestartSec = 5;
                TimeoutStopSec = 30;
                # Root, writing the Nix store and the state: ProtectSystem=full, not strict.
                ReadWritePaths = [ "/nix" cfg.stateDir ];
                RuntimeDirectory = "narlink"; # for listen.address = "/run/narlink/frames.sock"
                ProtectSystem = "full";
                ProtectHome = "read-only";
                PrivateTmp = true;
                PrivateDevices = true;
                UMask = "0022";
                NoNewPrivileges = true;
                ProtectKernelTunables = true;
                ProtectKernelModules = true;
                ProtectKernelLogs = true;
                ProtectControlGroups = true;
                ProtectClock = true;
                ProtectHostname = true;
                RestrictRealtime = true;
                RestrictSUIDSGID = true;
                RestrictNamespaces = true;
                LockPersonality = true;
                MemoryDenyWriteExecute = true;
                SystemCallArchitectures = "native";
                RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
              };
            };
          };
        };
    };
}
