// Hover hints for MotionPrompt controls, looked up by label text through the WebUI's global `titles`.
(function () {
    if (typeof titles === "undefined") return;
    Object.assign(titles, {
        "MotionPrompt": "Optical-flow guided prompt optimization (Nam et al., CVPR 2025): steers AnimateDiff towards real-looking motion. Open the accordion to enable.",
        "Discriminator": "Flow discriminator (.safetensors) in models/MotionPrompt. Train one in the MotionPrompt tab.",
        "Preset": "paper: 3 iterations on steps 4-14 of 25; fast: 1 iteration every 2nd step; low_vram: fewer iterations, checkpointing, small flow.",
        "Inner iterations (K)": "Gradient steps on the learnable token per guided sampling step.",
        "Frame pairs": "Random frame pairs scored per iteration. Only their frames are VAE-decoded.",
        "Token level": "input: tokens go through CLIP like a textual inversion embedding; output: they replace conditioning vectors (fallback).",
    });
})();
