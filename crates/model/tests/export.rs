//! `.pth` export: read back by our reader, and by PyTorch itself (`torch.load(weights_only=True)`
//! from the wheel in .libtorch, then `load_state_dict(strict=True)` semantics on the names).

use std::path::Path;
use std::process::Command;

use patchtcga_model::{read_tensors, with_bn_counters, write_pth, Arch, Backbone};
use tch::{nn, Device, Kind, Tensor};

fn exported(dir: &Path) -> (std::path::PathBuf, Vec<(String, Tensor)>) {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let _b = Backbone::new(&vs.root(), Arch::ResNet18.spec(224));
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.push(("extra.half".into(), Tensor::from_slice(&[1.5f32, -2.0]).to_kind(Kind::Half)));
    named.push(("extra.view".into(), Tensor::arange(12, (Kind::Float, Device::Cpu)).reshape([3, 4]).tr()));
    let named = with_bn_counters(named);
    let path = dir.join("resnet18.pth");
    write_pth(&path, &named).unwrap();
    (path, named)
}

#[test]
fn an_export_reads_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (path, named) = exported(dir.path());
    let back = read_tensors(&path).unwrap();
    assert_eq!(back.len(), named.len());
    for ((a, x), (b, y)) in named.iter().zip(&back) {
        assert_eq!(a, b);
        assert_eq!(x.kind(), y.kind(), "{a}");
        assert!(x.equal(y), "{a}");
    }
    assert!(back.iter().any(|(n, t)| n == "bn1.num_batches_tracked" && t.kind() == Kind::Int64));
}

#[test]
fn pytorch_loads_an_export_with_weights_only() {
    let dir = tempfile::tempdir().unwrap();
    let (path, named) = exported(dir.path());
    let libtorch = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.libtorch");
    let script = "import sys, torch\n\
sd = torch.load(sys.argv[1], weights_only=True)\n\
print(len(sd), float(sd['conv1.weight'].double().sum()), sd['bn1.num_batches_tracked'].dtype, sd['extra.view'].tolist()[1])\n";
    let out = Command::new("python3").env("PYTHONPATH", &libtorch).args(["-c", script]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = text.trim().splitn(4, ' ').collect();
    assert_eq!(fields[0].parse::<usize>().unwrap(), named.len());
    let ours = named.iter().find(|(n, _)| n == "conv1.weight").unwrap().1.to_kind(Kind::Double).sum(Kind::Double);
    assert!((fields[1].parse::<f64>().unwrap() - ours.double_value(&[])).abs() < 1e-9, "{text}");
    assert_eq!(fields[2], "torch.int64");
    assert_eq!(fields[3], "[1.0, 5.0, 9.0]", "a transposed view is written by value");
}

#[test]
fn a_full_disk_is_named_in_words_with_the_file_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    // The write's temporary file leads to /dev/full, where every write fails with ENOSPC.
    let partial = dir.path().join(format!(".model.safetensors.{}.partial.safetensors", std::process::id()));
    std::os::unix::fs::symlink("/dev/full", &partial).unwrap();
    let tensors = vec![("w".to_string(), Tensor::zeros([256, 256], (Kind::Float, Device::Cpu)))];
    let err = patchtcga_model::write_safetensors(&path, &tensors, &[]).unwrap_err().to_string();
    assert!(
        err.starts_with(&path.display().to_string())
            && err.contains("No space left on device (os error 28)")
            && !err.contains("IoError"),
        "{err}"
    );
    assert!(!path.exists() && !partial.exists(), "no file left behind");
}
