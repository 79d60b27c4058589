"""Command-line flags, read by the WebUI before it parses its arguments."""


def preload(parser):
    parser.add_argument("--motionprompt-models-dir", type=str, default=None,
                        help="MotionPrompt: folder of discriminators and RAFT weights (default: <models>/MotionPrompt)")
    parser.add_argument("--motionprompt-offline", action="store_true",
                        help="MotionPrompt: never download anything (RAFT weights must be in the models folder)")
