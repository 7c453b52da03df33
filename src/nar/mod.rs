//! NAR (Nix ARchive) codec. To be written.
