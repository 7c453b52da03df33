# The four closures of the uplink scenario benchmark (issue 4, item 4), each in an old and a new
# version, built from real third-party bytes that bench-scenarios/run.sh downloads and unpacks
# into CACHE/trees/<name> (PyPI wheels, Debian packages). Built with this machine's Nix:
#
#   NIX_REMOTE=local nix-build bench-scenarios/scenarios.nix --argstr cache /work/cache/scenarios \
#     --argstr scenario python --argstr side old --option sandbox false --option substituters ""
#
# scenario: python | massrebuild | bigbinary | bigbinary-deb | bigbinary-scipy | config |
#   compiled-scipy | compiled-tf;
# side: old | new;  quick: smaller variants (of python, massrebuild, bigbinary, config).
# Builders are /bin/sh with host tools called by absolute path (sandbox off), as in examples/demo.nix.
# Sources are imported into the store with builtins.path, so the same cache gives the same paths.
{ cache, scenario, side, quick ? false }:
let
  isNew = side == "new";
  pick = old: new: if isNew then new else old;

  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" ("set -e\n" + script) ];
  };

  # An unpacked download from the cache, imported into the store as a source path.
  tree = name: builtins.path { path = /. + "${cache}/trees/${name}"; name = "src-${name}"; };

  # Unpacked Debian packages, by package and full version ("~" written "_").
  deb = {
    libssl3 = v: tree "libssl3-${v}-1_deb12u2";
    openssl = tree "openssl-3.0.22-1_deb12u2";
    coreutils = tree "coreutils-9.1-1";
    bash = tree "bash-5.2.15-2+b13";
    busybox = tree "busybox-1.35.0-4+deb12u1+b1";
    zlib = tree "zlib1g-1.2.13.dfsg-1";
    webkit = u: tree "libwebkit2gtk-4.1-0-2.50.6-1_deb12${u}";
  };

  # A wheel's contents as a Python package path.
  pyPkg = pname: version: mk "python3.11-${pname}-${version}" ''
    /bin/mkdir -p $out/lib/python3.11/site-packages
    /bin/cp -r ${tree "${pname}-${version}"}/. $out/lib/python3.11/site-packages/
    /bin/chmod -R u+w $out
  '';
  site = p: "${p}/lib/python3.11/site-packages";

  # Debian's libssl3 (libssl.so.3, libcrypto.so.3, engines, providers) as a library path.
  libssl = version: mk "libssl3-${version}" ''
    /bin/mkdir -p $out/lib $out/share/doc
    /bin/cp -r ${deb.libssl3 version}/usr/lib/x86_64-linux-gnu/. $out/lib/
    /bin/cp -r ${deb.libssl3 version}/usr/share/doc/libssl3 $out/share/doc/
    /bin/chmod -R u+w $out
  '';

  # Copy ELF executables into $out/bin and point their RUNPATH into `lib`: the store hash of
  # `lib` is then embedded in every one of them, as in a Nix-built dependent.
  linkedBins = lib: srcs: ''
    /bin/mkdir -p $out/bin
    for f in ${builtins.concatStringsSep " " srcs}; do /bin/cp $f $out/bin/; done
    /bin/chmod -R u+w $out
    for f in $out/bin/*; do /usr/bin/patchelf --set-rpath ${lib}/lib $f; done
  '';

  coreutils = deb.coreutils;
  # Every executable of Debian's coreutils 9.1, in a fixed order.
  coreutilsBins =
    let names = dir: builtins.attrNames (builtins.readDir (/. + "${cache}/trees/coreutils-9.1-1/${dir}"));
    in map (n: "${coreutils}/bin/${n}") (names "bin") ++ map (n: "${coreutils}/usr/bin/${n}") (names "usr/bin");
  nth = n: l: builtins.elemAt l n;
  range = a: b: if a > b then [ ] else [ a ] ++ range (a + 1) b;
  # Deal list `l` round-robin into `k` hands.
  deal = k: l: map (i: map (j: nth j l) (builtins.filter (j: j - (j / k) * k == i) (range 0 (builtins.length l - 1)))) (range 0 (k - 1));

  openssl = lib: mk "openssl-3.0.22" (linkedBins lib [ "${deb.openssl}/usr/bin/openssl" ]);

  # A profile: one path with a symlink farm of its packages, as a system or user profile.
  profile = name: paths: mk name ''
    /bin/mkdir -p $out
    ${builtins.concatStringsSep "\n" (map (p: "/bin/ln -s ${p} $out/${p.name}") paths)}
  '';

  # (a) A Python service: own code (bench-scenarios/svc/v1 -> v2, a few lines changed) and a
  # numpy-class dependency getting a patch bump (numpy 1.26.3 -> 1.26.4; quick: requests
  # 2.31.0 -> 2.32.3), plus a dependency that does not change (requests 2.31.0).
  python =
    let
      dep = if quick then pyPkg "requests" (pick "2.31.0" "2.32.3") else pyPkg "numpy" (pick "1.26.3" "1.26.4");
      deps = if quick then [ dep ] else [ dep (pyPkg "requests" "2.31.0") ];
      svcVersion = pick "1.4.0" "1.4.1";
      src = builtins.path { path = ./svc + "/${pick "v1" "v2"}"; name = "telemetry-svc-src-${svcVersion}"; };
      pythonpath = builtins.concatStringsSep ":" ([ "$out/lib/python3.11/site-packages" ] ++ map site deps);
    in mk "telemetry-svc-${svcVersion}" ''
      /bin/mkdir -p $out/lib/python3.11/site-packages $out/bin
      /bin/cp -r ${src}/. $out/lib/python3.11/site-packages/
      /bin/chmod -R u+w $out
      /usr/bin/printf '#!/bin/sh\nexport PYTHONPATH=%s\nexec /usr/bin/python3 -m telemetry "$@"\n' "${pythonpath}" > $out/bin/telemetry-svc
      /bin/chmod +x $out/bin/telemetry-svc
    '';

  # (b) A mass rebuild: libssl3 3.0.20 -> 3.0.22 under 40 dependents (quick: 8), each holding
  # real ELF executables (Debian's coreutils, and openssl) whose RUNPATH points into it.
  massrebuild =
    let
      lib = libssl (pick "3.0.20" "3.0.22");
      k = if quick then 8 else 40;
      hands = if quick then map (b: [ b ]) (builtins.genList (i: nth (i * 13) coreutilsBins) k) else deal k coreutilsBins;
      dependents = builtins.genList (i: mk "coreutils-part-${toString i}" (linkedBins lib (nth i hands))) k;
    in profile "profile-massrebuild" (dependents ++ [ (openssl lib) ]);

  # An app whose wrapper puts Python packages on PYTHONPATH.
  pyApp = name: pkgs: mk name ''
    /bin/mkdir -p $out/bin
    /usr/bin/printf '#!/bin/sh\nexport PYTHONPATH=%s\nexec /usr/bin/python3 "$@"\n' \
      "${builtins.concatStringsSep ":" (map site pkgs)}" > $out/bin/analysis
    /bin/chmod +x $out/bin/analysis
  '';

  # (c) A large binary library minor update: pyarrow 15.0.0 -> 15.0.1 (a 124 MB path whose C++
  # libraries, libarrow.so 62 MB among them, are rebuilt: 87 % of its bytes are in changed
  # files), next to an unchanged numpy 1.26.4 and an app naming both (quick: libssl3 3.0.20 ->
  # 3.0.22, 6 MB, under one executable with its RUNPATH in it).
  bigbinary =
    if quick then mk "kiosk-app-2.0" (linkedBins (libssl (pick "3.0.20" "3.0.22")) [ "${coreutils}/usr/bin/env" ])
    else pyApp "analysis-app-2.0" [ (pyPkg "pyarrow" (pick "15.0.0" "15.0.1")) (pyPkg "numpy" "1.26.4") ];

  # (c2) The same kind on Debian: libwebkit2gtk-4.1-0 2.50.6-1~deb12u1 -> ~deb12u2, a stable
  # update whose 92 MB libwebkit2gtk-4.1.so changes in few places, under an app whose executable
  # has its RUNPATH in it. No quick variant.
  bigbinary-deb =
    let
      webkit = mk "libwebkit2gtk-4.1-2.50.6-${pick "deb12u1" "deb12u2"}" ''
        /bin/mkdir -p $out/lib $out/share/doc
        /bin/cp -r ${deb.webkit (pick "u1" "u2")}/usr/lib/x86_64-linux-gnu/. $out/lib/
        /bin/cp -r ${deb.webkit (pick "u1" "u2")}/usr/share/doc/. $out/share/doc/
        /bin/chmod -R u+w $out
      '';
    in mk "kiosk-app-2.0" (linkedBins webkit [ "${coreutils}/usr/bin/env" ]);

  # (c3) A large wheel's patch bump that changes few bytes: scipy 1.11.3 -> 1.11.4 (a 109 MB
  # path; 97 % of its file bytes are identical between the two), next to an unchanged numpy
  # 1.26.4 and an app naming both. No quick variant.
  bigbinary-scipy = pyApp "analysis-app-2.0" [ (pyPkg "scipy" (pick "1.11.3" "1.11.4")) (pyPkg "numpy" "1.26.4") ];

  # (e) Large compiled minor-version bumps (issue 20): hundreds of rebuilt ELF .so files.
  # scipy 1.11.4 -> 1.12.0 (a 142 MB path, 2,100 files, most .so rebuilt) next to an unchanged
  # numpy 1.26.4, and tensorflow-cpu 2.15.0 -> 2.15.1 (a 900 MB path; libtensorflow_cc.so.2 is
  # 565 MB), each under an app naming them. No quick variant.
  compiled-scipy = pyApp "analysis-app-3.0" [ (pyPkg "scipy" (pick "1.11.4" "1.12.0")) (pyPkg "numpy" "1.26.4") ];
  compiled-tf = pyApp "inference-app-1.0" [ (pyPkg "tensorflow-cpu" (pick "2.15.0" "2.15.1")) ];

  # (d) A config-only change of a system profile: a few packages (Debian's bash, coreutils,
  # busybox, zlib, libssl3 and openssl) and an /etc path; exactly one line of config changes.
  config =
    let
      lib = libssl "3.0.22";
      bash = mk "bash-5.2.15" ''/bin/cp -r ${deb.bash} $out; /bin/chmod -R u+w $out'';
      cu = mk "coreutils-9.1" ''/bin/cp -r ${coreutils} $out; /bin/chmod -R u+w $out'';
      busybox = mk "busybox-1.35.0" ''/bin/cp -r ${deb.busybox} $out; /bin/chmod -R u+w $out'';
      zlib = mk "zlib-1.2.13" ''/bin/cp -r ${deb.zlib} $out; /bin/chmod -R u+w $out'';
      ssl = openssl lib;
      pkgs = if quick then [ bash busybox lib ssl ] else [ bash cu busybox zlib lib ssl ];
      etc = mk "etc" ''
        /bin/mkdir -p $out/etc/narlink $out/etc/ssh $out/etc/profile.d
        /usr/bin/printf 'sat-7\n' > $out/etc/hostname
        /usr/bin/printf 'NAME="SatOS"\nID=satos\nVERSION_ID=24.11\nPRETTY_NAME="SatOS 24.11"\n' > $out/etc/os-release
        /usr/bin/printf 'export PATH=%s\n' "${builtins.concatStringsSep ":" (map (p: "${p}/bin") pkgs)}" > $out/etc/profile.d/path.sh
        /usr/bin/printf 'Port 22\nListenAddress 10.7.0.1\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nClientAliveInterval 120\nMaxSessions 4\n' > $out/etc/ssh/sshd_config
        /usr/bin/printf '[device]\nstate = "/var/lib/narlink"\nstore = "local?root=/"\n\n[link]\nframe_size = 1024\nredundancy = 25\n[log]\nlevel = "%s"\nrotate_mb = 8\n' "${pick "debug" "info"}" > $out/etc/narlink/device.toml
        /usr/bin/printf 'openssl_conf = default_conf\n[default_conf]\nssl_conf = ssl_sect\n[ssl_sect]\nsystem_default = system_default_sect\n[system_default_sect]\nMinProtocol = TLSv1.2\nCipherString = DEFAULT@SECLEVEL=2\n# libraries: ${lib}/lib\n' > $out/etc/openssl.cnf
      '';
    in profile "system" (pkgs ++ [ etc ]);
in
{ inherit python massrebuild bigbinary bigbinary-deb bigbinary-scipy config compiled-scipy compiled-tf; }.${scenario}
