// The widget manager finds its fonts relative to the AMD module path of its bundle; point that path
// at the vendored copy in _static (whatever the page's folder depth), so nothing resolves to a missing file.
(function () {
  var here = document.currentScript.src;
  var base = here.substring(0, here.lastIndexOf("/") + 1);
  require.config({paths: {"@jupyter-widgets/html-manager/dist": base + "html-manager",
                          "@jupyter-widgets": base + "html-manager"}});
})();
