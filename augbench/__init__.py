"""augbench: augmentation-invariant self-supervised representation learning, pretrained, evaluated and analysed.

The Python API mirrors the command line:

    run = augbench.pretrain("configs/methods/moco_v2.yaml", ["trainer.max_epochs=20"])
    results = augbench.evaluate(run.encoder, suite="quick")
"""

__version__ = "0.1.0"

_API = {
    "pretrain": "augbench.train.pretrain",
    "load_config": "augbench.train.config",
    "evaluate": "augbench.evaluate.evaluate",
    "sensitivity_table": "augbench.evaluate.probes",
    "load_encoder": "augbench.models.io",
    "quickstart": "augbench.quickstart",
    "load_results": "augbench.analysis.store",
    "run_benchmark": "augbench.benchmark",
}


def __getattr__(name: str):
    # Imported on first use: `import augbench` stays light for the command line and for workers.
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'augbench' has no attribute {name!r}")


__all__ = [*_API, "__version__"]
