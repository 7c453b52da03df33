#!/usr/bin/env python3
"""Uplink bytes of one update (closure OLD -> closure NEW) through narlink and its peers.

    measure.py scenario --name N --old ROOT --new ROOT --work DIR --narlink BIN [--skip PEER,...]
    measure.py report --work DIR [--md FILE]      # merge DIR/*/result.json, print the table

Called by bench-scenarios/run.sh, which builds the closures; see bench-scenarios/README.md for
what each peer counts. Every external tool is called by name and must be on PATH.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PEERS = ["naive", "attic", "casync", "zstd_patch", "xdelta3", "hdiffpatch", "ostree"]
COMPLETE_PEERS = ["naive", "attic", "casync", "ostree"]
RAW_DELTAS = ["zstd_patch", "xdelta3", "hdiffpatch"]
# Issue 20: a signature and 100 B per new path on top of a raw delta.
SIGNATURE = 64
PER_PATH = 100


def log(*a):
    print("  ", *a, file=sys.stderr, flush=True)


def sh(cmd, **kw):
    """Run a command (list), return stdout bytes; raise with stderr on failure."""
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({r.returncode}): {' '.join(map(str, cmd))[:300]}\n{r.stderr.decode(errors='replace')[-2000:]}")
    return r.stdout


def timed(cmd, timefile, **kw):
    """Run under /usr/bin/time; return (stdout, wall seconds, peak RSS in KiB)."""
    out = sh(["/usr/bin/time", "-f", "%e %M", "-o", str(timefile)] + list(map(str, cmd)), **kw)
    wall, rss = Path(timefile).read_text().split()[-2:]
    return out, float(wall), int(rss)


def closure(root, store=None):
    cmd = ["nix-store"] + (["--store", store] if store else []) + ["-qR", root]
    return sh(cmd).decode().split()


def dir_bytes(d):
    return sum(f.stat().st_size for f in Path(d).rglob("*") if f.is_file() and not f.is_symlink())


# ---------------------------------------------------------------------------------- peers

def peer_naive(ctx):
    """nix-store --export of the new paths | zstd -19 --long=27."""
    out = ctx["dir"] / "naive.nar.zst"
    with open(out, "wb") as f:
        p1 = subprocess.Popen(["nix-store", "--export"] + ctx["new_paths"], stdout=subprocess.PIPE)
        p2 = subprocess.Popen(["zstd", "-q", "-19", "--long=27", "-c"], stdin=p1.stdout, stdout=f)
        p1.stdout.close()
        if p2.wait() != 0 or p1.wait() != 0:
            raise RuntimeError("nix-store --export | zstd failed")
    return {"bytes": out.stat().st_size}


def peer_attic(ctx):
    """FastCDC v2020 16/64/256 KiB over each whole NAR; new chunks each zstd -19 alone."""
    import pyfastcdc
    import zstandard

    cdc = pyfastcdc.FastCDC(64 * 1024, min_size=16 * 1024, max_size=256 * 1024)
    old = set()
    for p in ctx["old_closure"]:
        data = ctx["nar"](p).read_bytes()
        for c in cdc.cut_buf(data):
            old.add(hashlib.sha256(c.data).digest())
    cctx = zstandard.ZstdCompressor(level=19)
    sent, total, new_chunks, raw = set(), 0, 0, 0
    chunks = 0
    for p in ctx["new_paths"]:
        data = ctx["nar"](p).read_bytes()
        for c in cdc.cut_buf(data):
            chunks += 1
            h = hashlib.sha256(c.data).digest()
            if h in old or h in sent:
                continue
            sent.add(h)
            new_chunks += 1
            raw += len(c.data)
            total += len(cctx.compress(bytes(c.data)))
    return {"bytes": total, "chunks": chunks, "new_chunks": new_chunks, "new_chunk_raw_bytes": raw}


def peer_casync(ctx):
    """casync make of each new NAR (blob index) into a store seeded with every old NAR."""
    d = ctx["dir"] / "casync"
    shutil.rmtree(d, ignore_errors=True)
    (d / "idx").mkdir(parents=True)
    store = d / "store"
    for i, p in enumerate(ctx["old_closure"]):
        sh(["casync", "make", f"--store={store}", str(d / "idx" / f"old-{i}.caibx"), str(ctx["nar"](p))])
    before = {f: f.stat().st_size for f in store.rglob("*.cacnk")}
    idx = 0
    for i, p in enumerate(ctx["new_paths"]):
        out = d / "idx" / f"new-{i}.caibx"
        sh(["casync", "make", f"--store={store}", str(out), str(ctx["nar"](p))])
        idx += out.stat().st_size
    new = {f: f.stat().st_size for f in store.rglob("*.cacnk") if f not in before}
    chunk_bytes = sum(new.values())
    return {"bytes": chunk_bytes + idx, "new_chunks": len(new), "chunk_bytes": chunk_bytes, "index_bytes": idx}


def peer_zstd_patch(ctx):
    """zstd -19 --long=31 --patch-from=OLD_CONCAT NEW_CONCAT (checked by decoding)."""
    d = ctx["dir"]
    out = d / "delta.zst"
    _, s, rss = timed(["zstd", "-q", "-f", "-19", "--long=31", f"--patch-from={ctx['old_concat']}", str(ctx["new_concat"]),
                       "-o", str(out)], d / "t")
    back = d / "delta.zst.check"
    sh(["zstd", "-q", "-f", "-d", "--long=31", f"--patch-from={ctx['old_concat']}", str(out), "-o", str(back)])
    sh(["cmp", str(back), str(ctx["new_concat"])])
    back.unlink()
    return {"bytes": out.stat().st_size, "seconds": s, "rss_kib": rss}


def peer_xdelta3(ctx):
    """xdelta3 -9 -s OLD_CONCAT NEW_CONCAT, source window = whole OLD_CONCAT (checked by decoding)."""
    d = ctx["dir"]
    out = d / "delta.vcdiff"
    size = ctx["old_concat"].stat().st_size
    win = 1 << 23
    while win < size:
        win <<= 1
    _, s, rss = timed(["xdelta3", "-9", "-e", "-f", "-B", str(win), "-s", str(ctx["old_concat"]), str(ctx["new_concat"]), str(out)],
                      d / "t")
    back = d / "delta.vcdiff.check"
    sh(["xdelta3", "-d", "-f", "-B", str(win), "-s", str(ctx["old_concat"]), str(out), str(back)])
    sh(["cmp", str(back), str(ctx["new_concat"])])
    back.unlink()
    return {"bytes": out.stat().st_size, "source_window": win, "seconds": s, "rss_kib": rss}


def peer_hdiffpatch(ctx):
    """HDiffPatch's algorithm with LZMA (PyPI detools: create_patch -t hdiffpatch -a hdiffpatch
    -c lzma) of NEW_CONCAT against OLD_CONCAT (checked by applying)."""
    d = ctx["dir"]
    out = d / "delta.hdiff"
    _, s, rss = timed(["detools", "create_patch", "-t", "hdiffpatch", "-a", "hdiffpatch", "-c", "lzma",
                       str(ctx["old_concat"]), str(ctx["new_concat"]), str(out)], d / "t")
    back = d / "delta.hdiff.check"
    sh(["detools", "apply_patch", str(ctx["old_concat"]), str(out), str(back)])
    sh(["cmp", str(back), str(ctx["new_concat"])])
    back.unlink()
    return {"bytes": out.stat().st_size, "seconds": s, "rss_kib": rss}


def peer_ostree(ctx):
    """OSTree static delta (archive repo, defaults) between commits of the two closure trees."""
    d = ctx["dir"] / "ostree"
    shutil.rmtree(d, ignore_errors=True)
    repo = d / "repo"
    repo.mkdir(parents=True)
    sh(["ostree", "init", f"--repo={repo}", "--mode=archive"])
    revs = {}
    for side in ("old", "new"):
        tree = d / f"{side}-tree"
        (tree / "nix" / "store").mkdir(parents=True)
        for p in ctx[f"{side}_closure"]:
            sh(["cp", "-a", p, str(tree / "nix" / "store") + "/"])
        sh(["ostree", "commit", f"--repo={repo}", f"--branch={side}", f"--tree=dir={tree}", "--no-xattrs",
            "--owner-uid=0", "--owner-gid=0", "--timestamp=1970-01-01T00:00:01Z", f"--subject={side}"])
        revs[side] = sh(["ostree", "rev-parse", f"--repo={repo}", side]).decode().strip()
        sh(["chmod", "-R", "u+w", str(tree)])
        shutil.rmtree(tree)
    sh(["ostree", "static-delta", "generate", f"--repo={repo}", f"--from={revs['old']}", f"--to={revs['new']}"])
    deltas = repo / "deltas"
    files = [f for f in deltas.rglob("*") if f.is_file()]
    parts = sum(f.stat().st_size for f in files)
    # Objects the delta leaves out (too large to diff: a 565 MB library, say) are "fallback"
    # objects, which a client fetches whole beside the delta: they count too. (Before
    # 2026-12-05 they were left out, and OSTree's figure was too small wherever one occurred.)
    show = sh(["ostree", "static-delta", "show", f"--repo={repo}", f"{revs['old']}-{revs['new']}"]).decode()
    fallback = sum(int(l.split(":")[1].split()[0]) for l in show.splitlines()
                   if l.startswith("Total Fallback Size:"))
    out = {"bytes": parts + fallback, "files": len(files), "delta_bytes": parts, "fallback_bytes": fallback}
    shutil.rmtree(d)
    return out


def run_narlink(ctx, narlink):
    """ground init OLD, pack NEW (signed); device store holding OLD: receive, import, verify."""
    d = ctx["dir"] / "narlink"
    if d.exists():
        sh(["chmod", "-R", "u+w", str(d)])
        shutil.rmtree(d)
    d.mkdir(parents=True)
    sh(["nix-store", "--generate-binary-cache-key", "bench-ground-1", str(d / "ground.sk"), str(d / "ground.pk")])
    mirror, bundle = d / "mirror", d / "update.bundle"
    _, init_s, init_rss = timed([narlink, "--quiet", "ground", "init", "--mirror", mirror, "--json", ctx["old"]], d / "t")
    out, pack_s, pack_rss = timed([narlink, "--quiet", "ground", "pack", "--mirror", mirror, "--sign-key", d / "ground.sk",
                                   "--out", bundle, "--json", ctx["new"]], d / "t")
    report = json.loads(out)
    # The device: a chroot store holding the old closure.
    dev = d / "device"
    store = f"local?root={dev}"
    p1 = subprocess.Popen(["nix-store", "--export"] + ctx["old_closure"], stdout=subprocess.PIPE)
    p2 = subprocess.run(["nix-store", "--store", store, "--import"], stdin=p1.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    p1.stdout.close()
    if p1.wait() != 0 or p2.returncode != 0:
        raise RuntimeError("seeding the device store failed: " + p2.stderr.decode(errors="replace")[-1000:])
    state = d / "state"
    sh([narlink, "--quiet", "device", "init", "--state", str(state), "--store", store, "--trust", str(d / "ground.pk")])
    _, recv_s, recv_rss = timed([narlink, "--quiet", "device", "receive", "--state", state, bundle], d / "t")
    _, imp_s, imp_rss = timed([narlink, "--quiet", "device", "import", "--state", state], d / "t")
    sh(["nix-store", "--store", store, "--verify-path"] + ctx["new_closure"])
    dev_closure = closure(ctx["new"], store)
    if sorted(dev_closure) != sorted(ctx["new_closure"]):
        raise RuntimeError("device closure differs from the ground's")
    r = {
        "bytes": report["bundle_bytes"],
        "bundle_file_bytes": bundle.stat().st_size,
        "manifest_bytes": report.get("manifest_bytes"),
        "payload_bytes": report.get("bytes_compressed"),
        "chunks_new": report.get("chunks_new"),
        "chunks_reused": report.get("chunks_reused"),
        "paths_new": report.get("paths_new"),
        "ground_init_s": init_s, "ground_init_rss_kib": init_rss,
        "ground_pack_s": pack_s, "ground_pack_rss_kib": pack_rss,
        "device_receive_s": recv_s, "device_receive_rss_kib": recv_rss,
        "device_import_s": imp_s, "device_import_rss_kib": imp_rss,
        "verified": True, "closures_equal": True,
        "pack_report": report,
    }
    sh(["chmod", "-R", "u+w", str(dev)])
    shutil.rmtree(dev)
    return r


# ---------------------------------------------------------------------------------- driver

def cmd_scenario(a):
    work = Path(a.work) / a.name
    work.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, (a.skip or "").split(",")))
    t0 = time.time()
    old, new = os.path.realpath(a.old), os.path.realpath(a.new)
    old_closure, new_closure = closure(old), closure(new)
    old_set = set(old_closure)
    new_paths = [p for p in new_closure if p not in old_set]
    nars = work / "nars"
    shutil.rmtree(nars, ignore_errors=True)
    nars.mkdir()

    def nar(p):
        f = nars / (os.path.basename(p) + ".nar")
        if not f.exists():
            with open(f, "wb") as out:
                subprocess.run(["nix-store", "--dump", p], stdout=out, check=True)
        return f

    def concat(paths, name):
        f = work / name
        with open(f, "wb") as out:
            for p in paths:
                with open(nar(p), "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        return f

    ctx = {"dir": work, "old": old, "new": new, "old_closure": old_closure, "new_closure": new_closure,
           "new_paths": new_paths, "nar": nar}
    ctx["old_concat"] = concat(old_closure, "old.concat")
    ctx["new_concat"] = concat(new_paths, "new.concat")
    res = {
        "scenario": a.name, "old": old, "new": new,
        "paths_old_closure": len(old_closure), "paths_new_closure": len(new_closure), "paths_new": len(new_paths),
        "nar_bytes_old_closure": ctx["old_concat"].stat().st_size, "nar_bytes_new": ctx["new_concat"].stat().st_size,
        "new_paths": new_paths, "peers": {}, "peer_seconds": {}, "not_measured": {},
    }
    log(f"{a.name}: {len(new_paths)} new paths of {len(new_closure)}, new NAR bytes {res['nar_bytes_new']:,}, old closure NAR bytes {res['nar_bytes_old_closure']:,}")
    for peer in PEERS:
        if peer in skip:
            res["not_measured"][peer] = "skipped (--skip)"
            continue
        t = time.time()
        try:
            res["peers"][peer] = globals()[f"peer_{peer}"](ctx)
        except Exception as e:  # record, do not hide: the table shows "failed"
            res["not_measured"][peer] = f"failed: {e}"[:2000]
            log(f"{peer}: FAILED: {e}")
            continue
        res["peer_seconds"][peer] = round(time.time() - t, 1)
        log(f"{peer}: {res['peers'][peer]['bytes']:,} B in {res['peer_seconds'][peer]} s")
    if a.library:
        # Issue 4's mass-rebuild bound: zstd patch-from of the bumped library's own NAR against its
        # predecessor's, plus 1 KB per rebuilt dependent.
        olib = [p for p in old_closure if os.path.basename(p)[33:].startswith(a.library)]
        nlib = [p for p in new_paths if os.path.basename(p)[33:].startswith(a.library)]
        if len(olib) == 1 and len(nlib) == 1:
            out = work / "library.delta.zst"
            sh(["zstd", "-q", "-f", "-19", "--long=31", f"--patch-from={nar(olib[0])}", str(nar(nlib[0])), "-o", str(out)])
            res["library_delta_bytes"] = out.stat().st_size
            res["mass_rebuild_bound"] = out.stat().st_size + 1000 * (len(new_paths) - 1)
    t = time.time()
    try:
        res["narlink"] = run_narlink(ctx, a.narlink)
        log(f"narlink: {res['narlink']['bytes']:,} B; pack {res['narlink']['ground_pack_s']} s, import {res['narlink']['device_import_s']} s; verified")
    except Exception as e:
        res["narlink"] = {"error": str(e)[:3000]}
        log(f"narlink: FAILED: {e}")
    res["narlink_seconds"] = round(time.time() - t, 1)
    res["seconds"] = round(time.time() - t0, 1)
    if not a.keep:
        shutil.rmtree(nars)
        for f in ("old.concat", "new.concat"):
            (work / f).unlink()
    (work / "result.json").write_text(json.dumps(res, indent=1) + "\n")


def target(res):
    """Issue 20: narlink <= min(complete peers, raw binary deltas + 64 B + 100 B per new path)."""
    p = res["peers"]
    cands = [p[k]["bytes"] for k in COMPLETE_PEERS if k in p]
    cands += [p[k]["bytes"] + SIGNATURE + PER_PATH * res["paths_new"] for k in RAW_DELTAS if k in p]
    return min(cands) if cands else None


def fmt(n):
    return "—" if n is None else f"{n:,}"


GROUND_RSS_MIB = 512


def ground_table(results):
    """Issue 20: ground pack time against zstd patch-from's (and HDiffPatch's), throughput and
    peak RSS, and on every scenario narlink's bytes against HDiffPatch's."""
    hdr = ["scenario", "new NAR MB", "narlink pack s", "MB/s", "pack peak RSS", "zstd patch-from s (RSS)",
           "HDiffPatch s (RSS)", "pack / zstd", "pack / HDiffPatch", "time and RSS met", "narlink / HDiffPatch bytes"]
    out = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for r in results:
        n, p = r["narlink"], r["peers"]
        if "error" in n:
            continue
        mb = r["nar_bytes_new"] / 1e6
        peer = lambda k: (f"{p[k]['seconds']:.1f} ({p[k]['rss_kib'] / 1024:.0f} MiB)" if "seconds" in p.get(k, {}) else "—")
        ratio = lambda k: (f"{n['ground_pack_s'] / p[k]['seconds']:.2f}" if p.get(k, {}).get("seconds") else "—")
        rss = n["ground_pack_rss_kib"] / 1024
        z = p.get("zstd_patch", {}).get("seconds")
        met = "—" if z is None else ("yes" if n["ground_pack_s"] <= z and rss <= GROUND_RSS_MIB else "no")
        h = p.get("hdiffpatch", {}).get("bytes")
        out.append("| " + " | ".join([r["scenario"], f"{mb:.1f}", f"{n['ground_pack_s']:.1f}",
                                      f"{mb / n['ground_pack_s']:.2f}" if n["ground_pack_s"] else "—", f"{rss:.0f} MiB",
                                      peer("zstd_patch"), peer("hdiffpatch"), ratio("zstd_patch"), ratio("hdiffpatch"),
                                      met, f"{n['bytes'] / h:.3f}" if h else "—"]) + " |")
    return out


def cmd_report(a):
    work = Path(a.work)
    order = ["python", "massrebuild", "bigbinary", "bigbinary-deb", "bigbinary-scipy", "config", "compiled-scipy",
             "compiled-tf"]
    results = []
    for name in order + sorted(p.name for p in work.iterdir() if p.is_dir() and p.name not in order):
        f = work / name / "result.json"
        if f.exists():
            results.append(json.loads(f.read_text()))
    meta = json.loads((work / "meta.json").read_text()) if (work / "meta.json").exists() else {}
    lines = []
    hdr = ["scenario", "new paths", "new NAR", "naive (export+zstd)", "Attic-style", "casync", "OSTree delta",
           "zstd patch-from", "xdelta3", "HDiffPatch lzma", "**narlink**", "narlink / naive", "target", "met"]
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|" + "---|" * len(hdr))
    for r in results:
        p = r["peers"]
        nb = r["narlink"].get("bytes")
        naive = p.get("naive", {}).get("bytes")
        t = target(r)
        cell = lambda k: fmt(p[k]["bytes"]) if k in p else ("n/m" if k not in r["not_measured"] else "failed")
        row = [r["scenario"], str(r["paths_new"]), fmt(r["nar_bytes_new"]), cell("naive"), cell("attic"), cell("casync"),
               cell("ostree"), cell("zstd_patch"), cell("xdelta3"), cell("hdiffpatch"),
               f"**{fmt(nb)}**" if nb is not None else "failed",
               f"{100 * nb / naive:.1f}%" if nb is not None and naive else "—",
               fmt(t), ("yes" if nb <= t else "no") if nb is not None and t is not None else "—"]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    hdr2 = ["scenario", "narlink manifest+sig B", "narlink payload B", "chunks new / reused", "ground pack s",
            "ground pack peak RSS", "device receive s", "device import s", "device import peak RSS",
            "verify-path + closure", "scenario wall s"]
    lines.append("| " + " | ".join(hdr2) + " |")
    lines.append("|" + "---|" * len(hdr2))
    for r in results:
        n = r["narlink"]
        if "error" in n:
            lines.append(f"| {r['scenario']} | failed: {n['error'][:120]} |")
            continue
        lines.append(f"| {r['scenario']} | {fmt(n['bytes'] - n['payload_bytes'])} | {fmt(n['payload_bytes'])} | "
                     f"{n['chunks_new']} / {n['chunks_reused']} | {n['ground_pack_s']:.2f} | {n['ground_pack_rss_kib'] / 1024:.0f} MiB | "
                     f"{n['device_receive_s']:.2f} | {n['device_import_s']:.2f} | {n['device_import_rss_kib'] / 1024:.0f} MiB | "
                     f"{'ok' if n.get('verified') and n.get('closures_equal') else 'FAILED'} | {r['seconds']:.0f} |")
    lines.append("")
    hdr3 = ["scenario (seconds)"] + PEERS + ["narlink (all steps)"]
    lines.append("| " + " | ".join(hdr3) + " |")
    lines.append("|" + "---|" * len(hdr3))
    for r in results:
        lines.append("| " + " | ".join([r["scenario"]] + [str(r["peer_seconds"].get(k, "—")) for k in PEERS]
                                       + [str(r.get("narlink_seconds", "—"))]) + " |")
    lines.append("")
    lines += ground_table(results)
    extra = []
    for r in results:
        if "mass_rebuild_bound" in r:
            nb = r["narlink"].get("bytes")
            extra.append(f"- {r['scenario']}: mass-rebuild bound = zstd patch-from of the library's own NAR "
                         f"({fmt(r['library_delta_bytes'])} B) + 1 KB × {r['paths_new'] - 1} rebuilt dependents = "
                         f"{fmt(r['mass_rebuild_bound'])} B; narlink {fmt(nb)} B: "
                         f"{'met' if nb is not None and nb <= r['mass_rebuild_bound'] else 'not met'}.")
        for k, why in r["not_measured"].items():
            extra.append(f"- {r['scenario']}: {k} not measured: {why[:300]}")
    if extra:
        lines.append("")
        lines += extra
    table = "\n".join(lines) + "\n"
    print(table)
    if a.md:
        Path(a.md).write_text(table)
    (work / "results.json").write_text(json.dumps({"meta": meta, "scenarios": results}, indent=1) + "\n")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("scenario")
    s.add_argument("--name", required=True)
    s.add_argument("--old", required=True)
    s.add_argument("--new", required=True)
    s.add_argument("--work", required=True)
    s.add_argument("--narlink", required=True)
    s.add_argument("--skip")
    s.add_argument("--library", help="name prefix of the bumped library (mass-rebuild bound)")
    s.add_argument("--keep", action="store_true", help="keep NARs and concatenations")
    r = sub.add_parser("report")
    r.add_argument("--work", required=True)
    r.add_argument("--md")
    a = ap.parse_args()
    {"scenario": cmd_scenario, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
