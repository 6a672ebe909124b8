/* The job form (templates/training/job_new.html): offer only the bases the chosen template can
   train, only the purposes the chosen license permits, and the template's starting settings
   until the person types their own. The server checks all of it again; without this file every
   choice is shown. */
(function () {
  "use strict";

  function byName(form, name) { return form.querySelector('[name="' + name + '"]'); }

  function narrow(select, allowed) {
    var firstAllowed = null;
    Array.prototype.forEach.call(select.options, function (option) {
      var ok = allowed(option);
      option.hidden = !ok;
      option.disabled = !ok;
      // The template's starting base (data-default) comes before the first one listed.
      if (ok && (firstAllowed === null || (option.hasAttribute("data-default") && !firstAllowed.hasAttribute("data-default")))) {
        firstAllowed = option;
      }
    });
    Array.prototype.forEach.call(select.querySelectorAll("optgroup"), function (group) {
      group.hidden = !Array.prototype.some.call(group.children, function (o) { return !o.hidden; });
    });
    var current = select.options[select.selectedIndex];
    if ((!current || current.disabled) && firstAllowed) { select.value = firstAllowed.value; }
  }

  function enhance(form) {
    var template = byName(form, "template");
    var base = byName(form, "base");
    var license = byName(form, "grant");
    var purpose = byName(form, "purpose");
    var touched = {};
    ["epochs", "learning_rate", "batch_size", "max_seq_len"].forEach(function (name) {
      var input = byName(form, name);
      if (input) { input.addEventListener("input", function () { touched[name] = true; }); }
    });

    function onTemplate() {
      var chosen = template.options[template.selectedIndex];
      if (!chosen) { return; }
      var task = chosen.getAttribute("data-task");
      if (base) {
        var current = base.options[base.selectedIndex];
        if (current && current.getAttribute("data-task") !== task) { base.selectedIndex = -1; }
        narrow(base, function (o) { return o.getAttribute("data-task") === task; });
      }
      var settings = {};
      try { settings = JSON.parse(chosen.getAttribute("data-quick-start") || "{}"); } catch (e) { settings = {}; }
      Object.keys(settings).forEach(function (name) {
        var input = byName(form, name);
        if (input && !touched[name]) { input.value = String(settings[name]); }
      });
    }

    function permittedBy(attribute) {
      var map = {};
      try { map = JSON.parse(license.getAttribute(attribute) || "{}"); } catch (e) { map = {}; }
      return map[license.value] || null;
    }

    function onLicense() {
      if (!license) { return; }
      var purposes = permittedBy("data-license-purposes");
      if (purpose && purposes) { narrow(purpose, function (o) { return purposes.indexOf(o.value) >= 0; }); }
      var templates = permittedBy("data-license-templates");
      if (template && templates && templates.length) {
        var before = template.value;
        narrow(template, function (o) { return templates.indexOf(o.value) >= 0; });
        if (template.value !== before) { onTemplate(); }
      }
    }

    if (template) { template.addEventListener("change", onTemplate); }
    if (license) { license.addEventListener("change", onLicense); }
    if (base && template) {
      var chosen = template.options[template.selectedIndex];
      var task = chosen ? chosen.getAttribute("data-task") : null;
      narrow(base, function (o) { return o.getAttribute("data-task") === task; });
    }
    onLicense();
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-job-form]").forEach(enhance);
  });
})();
