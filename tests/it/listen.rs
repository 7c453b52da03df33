//! `device listen`: frames over real loopback sockets (UDP, TCP, Unix) give the same import
//! as frames from files.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn frames_of(rig: &Rig, v2: &str) -> Vec<Vec<u8>> {
    rig.pack(&[
        "--out",
        rig.p("b"),
        "--frames",
        rig.p("frames"),
        "--frame-size",
        "1024",
        v2,
    ]);
    std::fs::read(rig.p("frames"))
        .unwrap()
        .chunks(1024 + 44)
        .map(<[u8]>::to_vec)
        .collect()
}

fn via_socket(kind: &str) -> String {
    let (v1, v2) = (demo(1), demo(2));
    let rig = Rig::new(&v1);
    let frames = frames_of(&rig, &v2);
    let addr_arg = match kind {
        "unix" => rig.p("sock").to_owned(),
        _ => "127.0.0.1:0".to_owned(),
    };
    let mut child = nix_env(Command::new(NARLINK).args([
        "--quiet",
        "device",
        "listen",
        "--state",
        rig.p("state"),
        &format!("--{kind}"),
        &addr_arg,
        "--import",
        "--exit-when-done",
        "--status-out",
        rig.p("status"),
    ]))
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(line.starts_with("listening on"), "{line}");
    match kind {
        "udp" => {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            for (i, f) in frames.iter().enumerate() {
                s.send_to(f, &addr).unwrap();
                if i % 32 == 31 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
        "tcp" => {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            // Odd write sizes: frames are cut out wherever reads end.
            for piece in frames.concat().chunks(777) {
                s.write_all(piece).unwrap();
            }
        }
        _ => {
            let mut s = std::os::unix::net::UnixStream::connect(&addr).unwrap();
            s.write_all(&frames.concat()).unwrap();
        }
    }
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            assert!(status.success(), "listen failed: {err}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "listen did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    rig.assert_holds(&v2);
    let st = rig.json(&["inspect", rig.p("status")]);
    assert!(
        st["phase"] == "imported" || st["phase"] == "ready to import",
        "{st}"
    );
    rig.device_db()
}

fn via_files() -> String {
    let (v1, v2) = (demo(1), demo(2));
    let rig = Rig::new(&v1);
    frames_of(&rig, &v2);
    rig.receive_import(rig.p("frames"));
    rig.assert_holds(&v2);
    rig.device_db()
}

#[test]
fn sockets_import_the_same_as_files() {
    let files = via_files();
    for kind in ["udp", "tcp", "unix"] {
        assert_eq!(
            via_socket(kind),
            files,
            "{kind} import differs from the file import"
        );
    }
}
