"""Started by Python in every process that has benchmarks/ on its path: with OPENVINO_UNET set (by
`engine.py`'s end-to-end part), the CLI's model runs its UNet on OpenVINO. Nothing otherwise."""
import os

if os.environ.get("OPENVINO_UNET"):
    import engine

    engine.install_in_cli()
