"""Drop repeated <script> tags (sphinx-thebe and sphinx-togglebutton register their inline scripts twice)."""


def _dedupe(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files") or []
    seen, kept = set(), []
    for script in scripts:
        key = (getattr(script, "filename", None) or "", tuple(sorted((getattr(script, "attributes", None) or {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _dedupe)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
