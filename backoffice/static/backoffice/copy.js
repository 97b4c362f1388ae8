// Copy buttons beside shortened hashes and addresses (a static file: the
// Content-Security-Policy allows no inline script).
document.addEventListener("click", function (event) {
  var button = event.target.closest("button.bo-copy");
  if (!button) return;
  var value = button.getAttribute("data-copy");
  var done = function () {
    button.textContent = "copied";
    setTimeout(function () { button.textContent = "copy"; }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(value).then(done);
  } else {
    var area = document.createElement("textarea");
    area.value = value;
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
    done();
  }
});
