"""WebUI entry: the WebUI executes every .py in scripts/; this one only hands over to the package.

The extension root is on sys.path while this file loads, so the package import works here; the
package keeps its absolute path afterwards, so its lazy imports keep working.
"""

from motionprompt.hosts.webui import integration
from motionprompt.hosts.webui.script import MotionPromptScript

__all__ = ["MotionPromptScript"]

integration.register()
