use std::path::Path;

use assert_cmd::Command;
use patchtcga_testkit::{repo_root, sample_slide};

fn patchtcga() -> Command {
    Command::cargo_bin("patchtcga").unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_names_every_subcommand() {
    let out = patchtcga().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = text(&out.stdout);
    for sub in ["build", "split", "verify", "extract", "stats", "info", "pretrain", "embed", "export"] {
        assert!(help.contains(sub), "{sub} missing from\n{help}");
    }
    let out = patchtcga().args(["build", "ptcga200", "--help"]).output().unwrap();
    let help = text(&out.stdout);
    for flag in
        ["--slides", "--out", "--mpp", "--size", "--field-um", "--per-slide", "--seed", "--workers", "--mpp-override"]
    {
        assert!(help.contains(flag), "{flag} missing from\n{help}");
    }
}

#[test]
fn the_demo_pipeline_runs_end_to_end_and_reports_failures() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("PTCGA200");
    let csv = repo_root().join("assets/demo_slides.csv");
    let run = patchtcga()
        .args(["build", "ptcga200", "--slides"])
        .arg(&csv)
        .arg("--out")
        .arg(&out)
        .args(["--workers", "2"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(text(&run.stdout).contains("1 tiled, 0 already complete, 0 failed"), "{}", text(&run.stdout));
    let n = std::fs::read_dir(out.join("skin")).unwrap().count();
    assert!(n >= 8);

    let verify = patchtcga().arg("verify").arg(out.join("MD5SUMS")).output().unwrap();
    assert!(verify.status.success());
    assert!(text(&verify.stdout).contains(&format!("{n} ok, 0 mismatched, 0 missing")));

    let mosaic = dir.path().join("mosaic.png");
    let stats = patchtcga().arg("stats").arg(&out).arg("--mosaic").arg(&mosaic).output().unwrap();
    assert!(stats.status.success(), "{}", text(&stats.stderr));
    assert!(text(&stats.stdout).contains("image_stats mean = ("));
    assert!(mosaic.is_file());

    // One good and one missing slide: the good one completes, the exit status says failure.
    let csv2 = dir.path().join("two.csv");
    std::fs::write(&csv2, format!("slide,organ\n{},skin\ngone.svs,lung\n", sample_slide().display())).unwrap();
    let out2 = dir.path().join("two");
    let run = patchtcga().args(["build", "ptcga200", "--slides"]).arg(&csv2).arg("--out").arg(&out2).output().unwrap();
    assert!(!run.status.success());
    let err = text(&run.stderr);
    assert!(err.contains("gone.svs: no such file") && err.contains("1 of 2 slide(s) failed"), "{err}");
    assert!(out2.join("skin").read_dir().unwrap().count() >= 8);

    std::fs::remove_file(out.join("skin").read_dir().unwrap().next().unwrap().unwrap().path()).unwrap();
    let verify = patchtcga().arg("verify").arg(out.join("MD5SUMS")).output().unwrap();
    assert!(!verify.status.success());
    assert!(text(&verify.stderr).contains("MISSING"));
}

#[test]
fn info_and_bad_arguments_get_one_clear_line() {
    let info = patchtcga().arg("info").arg(sample_slide()).output().unwrap();
    assert!(info.status.success());
    let s = text(&info.stdout);
    assert!(s.contains("2220 × 2967 px") && s.contains("0.4990 × 0.4990 µm/px (from: vendor)"), "{s}");
    assert!(s.contains("read by: native reader (Aperio SVS)"), "{s}");
    let info = patchtcga().arg("info").arg(sample_slide()).args(["--reader", "openslide"]).output().unwrap();
    assert!(text(&info.stdout).contains("read by: OpenSlide"), "{}", text(&info.stdout));

    let bad = patchtcga().args(["info", "nowhere.svs"]).output().unwrap();
    assert!(!bad.status.success());
    assert_eq!(text(&bad.stderr).trim(), "error: nowhere.svs: no such file");

    let tiff = repo_root().join("crates/slide/tests/data/boxes.tiff");
    let unmeasured = patchtcga().arg("info").arg(&tiff).output().unwrap();
    let s = text(&unmeasured.stdout);
    assert!(unmeasured.status.success(), "{}", text(&unmeasured.stderr));
    assert!(s.contains("no µm/px in the file") && s.contains("--mpp-override") && s.contains("`mpp` column"), "{s}");

    let conflict = patchtcga()
        .args([
            "build",
            "ptcga200",
            "--slides",
            "x.csv",
            "--out",
            "o",
            "--mpp",
            "0.5",
            "--size",
            "224",
            "--field-um",
            "300",
        ])
        .output()
        .unwrap();
    assert!(text(&conflict.stderr).contains("disagrees with --field-um 300"), "{}", text(&conflict.stderr));
}

#[test]
fn split_reads_the_release_pickle_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("PTCGA200");
    for organ in ["lung", "skin"] {
        for i in 0..6 {
            for x in [0, 512] {
                let p = root.join(organ).join(format!("TCGA-{organ}-{i}_{x}_0.png"));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, b"").unwrap();
            }
        }
    }
    let pickle = repo_root().join("crates/dataset/tests/golden/release_style_split.pickle");
    let out = patchtcga().arg("split").arg(&root).arg("--from-pickle").arg(&pickle).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("trial 0: train 16, val 4, test 4 patches"));
    assert!(Path::new(&root.join("splits.json")).is_file());

    let drawn = patchtcga().arg("split").arg(&root).args(["--seed", "5"]).output().unwrap();
    assert!(drawn.status.success(), "{}", text(&drawn.stderr));
    assert!(root.join("3fold_dict_idx_filenames.pickle").is_file());
}

#[test]
fn verify_layout_names_the_files_the_release_would_skip() {
    let dir = tempfile::tempdir().unwrap();
    let skin = dir.path().join("skin");
    std::fs::create_dir_all(&skin).unwrap();
    for name in ["TCGA-AA-0001-01Z-00-DX1_0_0.png", "TCGA-AA-0002-01Z-00-DX1.5e1d_0_0.png"] {
        image::RgbImage::new(4, 4).save(skin.join(name)).unwrap();
    }
    let out = patchtcga().arg("verify-layout").arg(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("skin/TCGA-AA-0002-01Z-00-DX1.5e1d_0_0.png") && stdout.contains("`.5e1d_0_0.png`"),
        "{stdout}"
    );
    assert!(stdout.contains("1 image(s) listed"), "{stdout}");
    assert!(text(&out.stderr).contains("re-running the dataset's `patchtcga build`"), "{}", text(&out.stderr));

    std::fs::remove_file(skin.join("TCGA-AA-0002-01Z-00-DX1.5e1d_0_0.png")).unwrap();
    let out = patchtcga().arg("verify-layout").arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// The `NEEDED` entries of a binary's dynamic section.
fn needed_libraries(bin: &str) -> String {
    let out = std::process::Command::new("readelf").arg("-d").arg(bin).output().expect("readelf (binutils)");
    text(&out.stdout).lines().filter(|l| l.contains("(NEEDED)")).collect::<Vec<_>>().join("\n")
}

#[test]
fn the_data_commands_binary_never_loads_libtorch() {
    let thin = needed_libraries(env!("CARGO_BIN_EXE_patchtcga"));
    assert!(thin.contains("libopenslide") && !thin.contains("torch"), "{thin}");
}

/// The data package builds without LibTorch: nothing it depends on is tch (`cargo tree` as a
/// user would run it, offline, from the lock file).
#[test]
fn the_data_package_has_no_libtorch_in_its_dependency_tree() {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-e", "normal,build", "-p", "patchtcga-cli", "--prefix", "none"])
        .current_dir(repo_root())
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tree = text(&out.stdout);
    assert!(tree.contains("patchtcga-slide") && tree.contains("patchtcga-dataset"), "{tree}");
    for crate_ in [
        "tch",
        "torch-sys",
        "patchtcga-model",
        "patchtcga-engine",
        "patchtcga-methods",
        "patchtcga-downstream",
        "patchtcga-features",
        "patchtcga-mil",
        "patchtcga-collective",
    ] {
        let named = |line: &str| line.split_whitespace().next() == Some(crate_);
        assert!(!tree.lines().any(named), "{crate_} in the data package's tree:\n{tree}");
    }
}

/// Every file under `root` (build bookkeeping aside) with a digest of its bytes.
fn tree(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if rel.starts_with(".patchtcga") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((rel, format!("{:x}", digest(&p))));
            }
        }
    }
    out.sort();
    out
}

/// Enough to tell files apart in a test: the bytes' length and a polynomial rolling hash.
fn digest(p: &Path) -> u128 {
    let b = std::fs::read(p).unwrap();
    b.iter().fold(b.len() as u128, |h, &x| h.wrapping_mul(1_000_003).wrapping_add(x as u128))
}

#[test]
fn a_build_over_two_processes_writes_what_one_process_writes_and_survives_a_lost_rank() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("slides.csv");
    let slide = sample_slide();
    let rows: String = (1..=4).map(|i| format!("{},{},s{i}\n", slide.display(), ["skin", "lung"][i % 2])).collect();
    std::fs::write(&csv, format!("slide,organ,id\n{rows}")).unwrap();
    let build = |out: &Path, extra: &[&str], env: &[(&str, &str)]| {
        let run = patchtcga()
            .args(["build", "ptcga200", "--per-slide", "4", "--slides"])
            .arg(&csv)
            .arg("--out")
            .arg(out)
            .args(extra)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", text(&run.stderr));
        text(&run.stdout)
    };
    let one = dir.path().join("one");
    build(&one, &["--workers", "1"], &[]);
    let two = dir.path().join("two");
    let said = build(&two, &["--nproc-per-node", "2"], &[]);
    assert!(said.contains("2 rank(s) done"), "{said}");
    assert_eq!(tree(&one), tree(&two));
    assert!(tree(&one).iter().any(|(f, _)| f == "MD5SUMS") && tree(&one).len() > 10);

    // Rank 1 of 2 never runs (killed before it started): rank 0 leaves the manifest to it.
    let lost = dir.path().join("lost");
    let said = build(&lost, &[], &[("RANK", "0"), ("WORLD_SIZE", "2")]);
    assert!(said.contains("rank 0 of 2") && said.contains("2 slide(s) of other ranks still pending"), "{said}");
    assert!(!lost.join("manifest.csv").exists());
    let said = build(&lost, &["--nproc-per-node", "2"], &[]);
    assert!(said.contains("2 rank(s) done"), "{said}");
    assert_eq!(tree(&one), tree(&lost));
}

#[test]
fn slide_labels_lays_out_camelyon16_with_its_test_set_and_panda_with_isup_grades() {
    let dir = tempfile::tempdir().unwrap();
    let c16 = dir.path().join("CAMELYON16");
    for (sub, names) in [
        ("training/normal", &["normal_001", "normal_002"][..]),
        ("training/tumor", &["tumor_001"][..]),
        ("testing/images", &["test_001", "test_002"][..]),
    ] {
        std::fs::create_dir_all(c16.join(sub)).unwrap();
        for n in names {
            std::fs::write(c16.join(sub).join(format!("{n}.tif")), b"").unwrap();
        }
    }
    std::fs::write(c16.join("testing/reference.csv"), "test_001,Tumor,Macro,Yes\ntest_002,Normal,,\n").unwrap();
    let out = dir.path().join("c16");
    let run = |bench: &str, root: &Path| {
        patchtcga().args(["slide-labels", bench, "--root"]).arg(root).arg("--out").arg(&out).output().unwrap()
    };
    let r = run("camelyon16", &c16);
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert!(
        text(&r.stdout).contains(
            "5 slides (cross-validation normal: 2, cross-validation tumor: 1, test normal: 1, test tumor: 1)"
        ),
        "{}",
        text(&r.stdout)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("labels.csv")).unwrap(),
        "slide,label,case,split\nnormal_001,normal,normal_001,\nnormal_002,normal,normal_002,\n\
         test_001,tumor,test_001,test\ntest_002,normal,test_002,test\ntumor_001,tumor,tumor_001,\n"
    );
    let slides = std::fs::read_to_string(out.join("slides.csv")).unwrap();
    assert!(slides.starts_with("slide,id\n") && slides.contains("testing/images/test_001.tif,test_001\n"), "{slides}");
    // A test image the reference does not label is named.
    std::fs::write(c16.join("testing/images/test_003.tif"), b"").unwrap();
    let r = run("camelyon16", &c16);
    assert!(!r.status.success() && text(&r.stderr).contains("reference.csv") && text(&r.stderr).contains("test_003"));

    let panda = dir.path().join("PANDA");
    std::fs::create_dir_all(panda.join("train_images")).unwrap();
    for id in ["aa01", "bb02"] {
        std::fs::write(panda.join("train_images").join(format!("{id}.tiff")), b"").unwrap();
    }
    let csv = "image_id,data_provider,isup_grade,gleason_score\naa01,karolinska,0,0+0\nbb02,radboud,4,4+4\n";
    std::fs::write(panda.join("train.csv"), csv).unwrap();
    let r = run("panda", &panda);
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert_eq!(
        std::fs::read_to_string(out.join("labels.csv")).unwrap(),
        "slide,label,case,split\naa01,0,aa01,\nbb02,4,bb02,\n"
    );
    std::fs::write(panda.join("train.csv"), format!("{csv}cc03,radboud,5,5+5\n")).unwrap();
    let r = run("panda", &panda);
    assert!(!r.status.success() && text(&r.stderr).contains("cc03"), "{}", text(&r.stderr));
}
