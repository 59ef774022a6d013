//! `patchtcga.build`: the dataset builders called from Python with the command line's options.

use clap::Parser;
use indicatif::ProgressBar;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use patchtcga_dataset::BuildDataset;
use patchtcga_launch::Share;

/// `patchtcga build <layout> …`, parsed as the command line parses it.
#[derive(Parser)]
#[command(name = "patchtcga build", no_binary_name = true)]
struct BuildCommand {
    #[command(subcommand)]
    dataset: BuildDataset,
}

/// Tiles the slides of a slide list into a release layout in this process: `args` are the
/// command line's after `patchtcga build` (`["ptcga200", "--slides", "S.csv", "--out", "D"]`).
/// Returns the summary the command prints and one message per failed slide (the others are
/// complete; calling again retries only the failed ones).
#[pyfunction]
pub fn build(py: Python<'_>, args: Vec<String>) -> PyResult<(String, Vec<String>)> {
    let command = BuildCommand::try_parse_from(&args).map_err(|e| PyValueError::new_err(e.render().to_string()))?;
    let (task, a) = command.dataset.task();
    if a.launch.nproc_per_node > 1 || a.launch.nnodes > 1 {
        return Err(PyValueError::new_err(
            "several processes are started by the command line (`patchtcga build … --nproc-per-node N`), not from Python",
        ));
    }
    let threads = a.workers;
    let slides = a.slides.clone();
    let options = a.options(Share { rank: 0, world: 1 }).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let rows = patchtcga_dataset::read_slides_csv(&slides).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let run = || {
        let report = patchtcga_dataset::build(&task, &rows, &options, &ProgressBar::new(0))?;
        Ok::<_, patchtcga_dataset::DatasetError>((report.summary(&options.out), report.failures))
    };
    crate::guarded(&slides, || {
        py.detach(|| match threads {
            Some(n) => rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1))
                .build()
                .map_err(|e| PyValueError::new_err(format!("cannot start worker threads: {e}")))?
                .install(run)
                .map_err(|e| PyValueError::new_err(e.to_string())),
            None => run().map_err(|e| PyValueError::new_err(e.to_string())),
        })
    })
}
