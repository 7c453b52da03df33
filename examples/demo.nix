# A small closure built from real third-party bytes (Debian's Python standard library, zlib
# and gzip binaries), in versions 1, 2 and 3, for the demo and the integration tests.
#
#   nix-build examples/demo.nix --arg version 2 --option sandbox false --option substituters ""
#
# Version 2 patches zlib (so every dependent's store hash changes and is embedded in its
# bytes) and edits a few lines of the app; version 3 also adds a Python package; version 4
# adds ten more (about 10 MB), for link simulations of a few megabytes of payload.
{ version ? 1 }:
let
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
  };
  v = toString version;

  pylib = mk "pylib-3.11" ''
    /bin/mkdir -p $out/lib/python3.11
    for m in json email http urllib logging; do
      /bin/cp -r /usr/lib/python3.11/$m $out/lib/python3.11/
    done
    /bin/rm -rf $out/lib/python3.11/*/__pycache__
    ${if version >= 3 then "/bin/cp -r /usr/lib/python3.11/xml $out/lib/python3.11/ && /bin/rm -rf $out/lib/python3.11/xml/*/__pycache__" else ""}
    ${if version >= 4 then ''
      for m in asyncio encodings distutils lib2to3 pydoc_data unittest multiprocessing importlib; do
        /bin/cp -r /usr/lib/python3.11/$m $out/lib/python3.11/
      done
      /bin/rm -rf $out/lib/python3.11/*/__pycache__ $out/lib/python3.11/*/*/__pycache__
    '' else ""}
  '';

  zlib = mk "zlib-1.2.13${if version >= 2 then "-p1" else ""}" ''
    /bin/mkdir -p $out/lib
    /bin/cp -L /usr/lib/x86_64-linux-gnu/libz.so.1 $out/lib/libz.so.1
    /bin/ln -s libz.so.1 $out/lib/libz.so
    ${if version >= 2 then "/bin/echo 'CVE-2022-37434 backport' > $out/lib/PATCHES" else ""}
  '';

  tools = mk "tools-${v}" ''
    /bin/mkdir -p $out/bin $out/share/doc
    /bin/cp /usr/bin/gzip /usr/bin/tar /usr/bin/sed $out/bin/
    /bin/echo "tools linked against ${zlib}/lib" > $out/share/doc/README
    /bin/ln -s ${zlib}/lib $out/lib
  '';

  app = mk "demo-app-${v}" ''
    /bin/mkdir -p $out/bin $out/etc
    /usr/bin/printf '#!/bin/sh\n# demo app, version ${v}\nexport PYTHONPATH=${pylib}/lib/python3.11\nexport LD_LIBRARY_PATH=${zlib}/lib\nexec ${tools}/bin/gzip "$@"\n' > $out/bin/demo
    /bin/chmod +x $out/bin/demo
    /usr/bin/printf 'version = ${v}\nlog_level = ${if version >= 2 then "info" else "debug"}\nuplink = ka-band\n' > $out/etc/demo.conf
    /bin/ln -s ${tools} $out/tools
  '';
in app
