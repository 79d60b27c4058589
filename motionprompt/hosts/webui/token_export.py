"""A trained token into the WebUI: copied into ``embeddings/`` (its record travels in the safetensors header), the
embedding database reloaded so its name works in the next prompt, the accordion's token lists refreshed.

A1111 (and Forge ``previous``) reload the database at the start of every generation when the folder changed
(``EmbeddingDatabase.load_textual_inversion_embeddings``, called from ``process_images_inner``); we force it at
once, so the Textual Inversion list and the name's hash are right before anyone generates.

The tab's *Export token* section does the same for any token file (the newest one the token section trained, in
``models/MotionPrompt/tokens/``, or a path), under the name you give.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

from ...amortized import token_file
from . import paths, widgets
from .embeddings import embeddings_dir, list_tokens, token_files

log = logging.getLogger("motionprompt")

#: the accordion's token dropdown per tab (txt2img, img2img), recorded when built (a UI reload replaces them): the
#: MotionPrompt tab refreshes them after an export
DROPDOWNS: dict = {}


def export_token(src: str | Path, name: str) -> Path:
    """``src`` (a token file) as ``embeddings/<name>.safetensors``; returns the new file. ValueError (a
    ``TokenFileError`` for a file that is not a token) says what to change. Only MotionPrompt tokens are exported
    (not a run's state, not other embeddings), and an embedding of that name that is not one is never overwritten."""
    tok = token_file.load_token(src)
    if not tok.ours:
        raise ValueError(f"{src} is not a MotionPrompt token (its header has no token record): export the "
                         "<name>.safetensors a token run wrote, not its state or another embedding")
    meta = {k: v for k, v in tok.meta.items() if k not in ("format", "format_version", "name", "n_tokens", "width")}
    dest = embeddings_dir() / f"{token_file.check_name(name)}{token_file.SUFFIX}"
    if dest.exists() and not token_file.is_token_file(dest):
        raise ValueError(f"{dest} is another embedding, not a MotionPrompt token: pick another name")
    path = token_file.save_token(dest, tok.vectors, meta)
    reload_embeddings()
    return path


def reload_embeddings() -> bool:
    """Force the WebUI's embedding database to re-read its folders; False (logged) where it has none."""
    try:
        from modules import sd_hijack

        sd_hijack.model_hijack.embedding_db.load_textual_inversion_embeddings(force_reload=True)
        return True
    except Exception as exc:  # the file is written; the WebUI reloads by itself at the next generation
        log.warning("MotionPrompt: could not reload the embeddings (%s: %s); the next generation will", type(exc).__name__, exc)
        return False


def dropdown_updates(picked: str | None = None) -> list:
    """One update per recorded accordion dropdown: the token files now, ``picked`` (a file name) selected."""
    import gradio as gr

    choices = list_tokens()
    value = picked if picked in choices else None
    return [gr.update(choices=choices, value=value) if value else gr.update(choices=choices) for _ in DROPDOWNS.values()]


# ------------------------------------------------------------------ the tab's "Export token" section
def trained_tokens() -> list[str]:
    """Token files under ``models/MotionPrompt/tokens/`` (told apart by their header: not the runs' state)."""
    return token_files(paths.tokens_dir())


def newest_trained(choices: list[str]) -> str | None:
    return widgets.newest(choices, paths.tokens_dir())


def source_path(pick: str) -> Path:
    """A name from the list (relative to the tokens folder) or a path typed in."""
    path = Path((pick or "").strip()).expanduser()
    return path if path.is_absolute() else paths.tokens_dir() / path


def name_for(pick: str | None) -> str:
    """The name the Name box starts with: the token file's own (what it was trained as)."""
    name = Path(pick or "").name
    return name[: -len(token_file.SUFFIX)] if name.endswith(token_file.SUFFIX) else name


def loaded_as(name: str) -> str:
    """What the WebUI's embedding database made of the name after the reload, in words ("" where unknown)."""
    try:
        from modules import sd_hijack

        db = sd_hijack.model_hijack.embedding_db
    except Exception:
        return ""
    if name in getattr(db, "word_embeddings", {}):
        return " The WebUI has loaded it."
    skipped = getattr(db, "skipped_embeddings", {}).get(name)
    if skipped is not None:
        return (f" <b>The WebUI skipped it</b>: it is {skipped.shape} wide and the loaded checkpoint takes "
                f"{getattr(db, 'expected_shape', '?')} (a token works with the model family it was trained on).")
    return ""


def export_clicked(pick, name):
    """Export button: (status, one update per accordion token list)."""
    keep = [_no_change() for _ in DROPDOWNS]
    if not (pick or "").strip():
        return ("<p class='motionprompt-error'><b>Cannot export:</b> pick a token file (train one above, or type the "
                "path of a .safetensors token)</p>", *keep)
    src = source_path(pick)
    name = (name or "").strip() or name_for(pick)
    try:
        if not src.is_file():
            raise ValueError(f"{src} not found (🔄 refreshes the list)")
        path = export_token(src, name)
    except (OSError, ValueError) as exc:
        return f"<p class='motionprompt-error'><b>Cannot export:</b> {html.escape(str(exc))}</p>", *keep
    word = html.escape(path.name[: -len(token_file.SUFFIX)])
    return (f"<p><b>Exported</b> to {html.escape(str(path))}: type <code>{word}</code> in a prompt, or pick it in the "
            f"accordion (Mode: amortized).{loaded_as(path.name[: -len(token_file.SUFFIX)])}</p>",
            *dropdown_updates(path.name))


def _no_change():
    import gradio as gr

    return gr.update()


def section():
    """Pick a token file, give it a name, Export: it goes into ``embeddings/``, the WebUI reloads its embeddings and
    the accordion's token lists (txt2img, img2img: built before extension tabs) are refreshed."""
    import gradio as gr

    with gr.Row():
        with gr.Column():
            gr.HTML("<p><b>Export token</b>: put a token file into the WebUI's embeddings folder under a name of your "
                    "choice (the word you type in a prompt); the token section does this by itself when it ends.</p>")
            with gr.Row():
                choices = trained_tokens()
                first = newest_trained(choices)
                pick = gr.Dropdown(choices=choices, value=first, label="Token file", allow_custom_value=True,
                                   elem_id="motionprompt_export_src",
                                   info="in models/MotionPrompt/tokens (newest first picked), or type a path")
                widgets.refresh_keeping(pick, trained_tokens, newest_trained, "motionprompt_export_src_refresh")
                name = gr.Textbox(label="Name (the prompt word)", value=name_for(first), elem_id="motionprompt_export_name")
            export = gr.Button("Export token", variant="primary", elem_id="motionprompt_export_start")
        with gr.Column():
            status = gr.HTML(elem_id="motionprompt_export_status")
    pick.change(fn=name_for, inputs=[pick], outputs=[name])
    export.click(fn=export_clicked, inputs=[pick, name], outputs=[status, *DROPDOWNS.values()])
