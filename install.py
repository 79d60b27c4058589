"""Run by the WebUI at install and at every start (unless --skip-install): fill gaps, never upgrade.

A WebUI venv normally has everything already. opencv is capped below 4.11: newer wheels need
numpy >= 2, which would break the WebUI's numpy 1.26.
"""

import launch

NEEDS = {
    "safetensors": "safetensors",
    "cv2": "opencv-python-headless<4.11",
    "matplotlib": "matplotlib",  # report charts; gradio brings it, so this only fills a gap
}

for module, requirement in NEEDS.items():
    if not launch.is_installed(module):
        launch.run_pip(f'install "{requirement}"', f"MotionPrompt requirement: {requirement}")
