/* Sealroom: chunked, resumable upload of a corpus file through the custody API.
 *
 * The widget is a <form data-upload> on a version page. It starts an upload
 * (POST data-start-url), PUTs the file in parts of data-part-size bytes as
 * application/octet-stream, and completes it. Each part is retried a few
 * times; if the connection stays down the upload pauses, and "Resume" (or
 * choosing the same file again, even after a reload) asks the API which parts
 * arrived and sends only the rest. Requests go same-origin with the session
 * cookie and the CSRF token from the csrftoken cookie.
 */
(function () {
  "use strict";

  var STORE_PREFIX = "sealroom:upload:";

  function csrfToken(form) {
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    if (match) { return decodeURIComponent(match[1]); }
    var input = form.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function ApiError(status, problem) {
    this.status = status;
    this.problem = problem || {};
    this.message = describe(status, this.problem);
  }

  function describe(status, problem) {
    if (status === 0) { return "The connection to Sealroom was lost."; }
    var text = problem.detail || problem.title || ("The server answered " + status + ".");
    var errors = (problem.errors || []).map(function (e) { return e.detail; }).filter(function (d) {
      return d && d !== problem.detail;
    });
    return errors.length ? text + " " + errors.join(" ") : text;
  }

  function request(form, method, url, body, contentType) {
    var headers = { "Accept": "application/json", "X-CSRFToken": csrfToken(form) };
    if (contentType) { headers["Content-Type"] = contentType; }
    return fetch(url, { method: method, headers: headers, body: body, credentials: "same-origin" }).then(
      function (response) {
        return response.text().then(function (text) {
          var data = null;
          try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
          if (!response.ok) { throw new ApiError(response.status, data); }
          return data;
        });
      },
      function () { throw new ApiError(0, null); }
    );
  }

  function wait(ms) {
    return new Promise(function (resolve) { window.setTimeout(resolve, ms); });
  }

  // A lost connection or a server error may pass; a 4xx will not.
  function retryable(error) {
    return error instanceof ApiError && (error.status === 0 || error.status >= 500 || error.status === 429);
  }

  function withRetries(attempts, task) {
    var tried = 0;
    function attempt() {
      tried += 1;
      return task().catch(function (error) {
        if (tried > attempts || !retryable(error)) { throw error; }
        return wait(500 * Math.pow(2, tried - 1)).then(attempt);
      });
    }
    return attempt();
  }

  function fieldList(value) {
    return value.split(",").map(function (s) { return s.trim(); }).filter(Boolean);
  }

  function formatOf(name, extensions) {
    var lowered = name.toLowerCase().replace(/\.gz$/, "");
    var dot = lowered.lastIndexOf(".");
    return dot >= 0 ? extensions[lowered.slice(dot + 1)] || "" : "";
  }

  function Uploader(form) {
    this.form = form;
    this.extensions = JSON.parse(form.dataset.extensions || "{}");
    this.labels = JSON.parse(form.dataset.formatLabels || "{}");
    this.fileInput = form.querySelector("input[type=file]");
    this.formatSelect = form.querySelector("select[name=format]");
    this.textFields = form.querySelector("input[name=text_fields]");
    this.metadataFields = form.querySelector("input[name=metadata_fields]");
    this.fieldNames = form.querySelector("[data-upload-fieldnames]");
    this.detected = form.querySelector("[data-upload-detected]");
    this.submit = form.querySelector("[data-upload-submit]");
    this.resume = form.querySelector("[data-upload-resume]");
    this.progressBox = form.querySelector("[data-upload-progress]");
    this.progress = form.querySelector("progress");
    this.percent = form.querySelector("[data-upload-percent]");
    this.status = form.querySelector("[data-upload-status]");
    this.busy = false;
    form.hidden = false;
    this.fileInput.addEventListener("change", this.onFileChosen.bind(this));
    this.formatSelect.addEventListener("change", this.onFileChosen.bind(this));
    form.addEventListener("submit", this.onSubmit.bind(this));
    this.resume.addEventListener("click", this.onSubmit.bind(this));
  }

  Uploader.prototype.file = function () {
    return this.fileInput.files && this.fileInput.files[0];
  };

  Uploader.prototype.format = function (file) {
    return this.formatSelect.value || (file ? formatOf(file.name, this.extensions) : "");
  };

  Uploader.prototype.onFileChosen = function () {
    var file = this.file();
    var format = this.format(file);
    this.resume.hidden = true;
    if (!file) { this.detected.textContent = ""; return; }
    if (format) {
      var gz = /\.gz$/i.test(file.name) ? ", gzipped" : "";
      this.detected.textContent = "Format: " + (this.labels[format] || format) + gz + ".";
    } else {
      this.detected.textContent = "The name does not say the format: choose one below.";
    }
    // Plain text has one field, "text"; the other formats name theirs.
    this.fieldNames.hidden = format === "text_lines" || format === "text_documents";
  };

  Uploader.prototype.storeKey = function (file) {
    return STORE_PREFIX + this.form.dataset.version + ":" + file.name + ":" + file.size + ":" + file.lastModified;
  };

  Uploader.prototype.show = function (done, total, message) {
    var pct = total ? Math.floor((done * 100) / total) : 0;
    this.progressBox.hidden = false;
    this.progress.value = pct;
    this.progress.textContent = pct + "%";
    this.percent.textContent = pct + "%";
    if (message !== undefined) { this.status.textContent = message; }
  };

  Uploader.prototype.setBusy = function (busy) {
    this.busy = busy;
    this.submit.disabled = busy;
    this.resume.disabled = busy;
    this.fileInput.disabled = busy;
    this.form.setAttribute("aria-busy", busy ? "true" : "false");
  };

  Uploader.prototype.partUrl = function (id, suffix) {
    return this.form.dataset.contributionUrl + id + suffix;
  };

  // The upload to continue for this file, with the part numbers that arrived, or a new one.
  Uploader.prototype.open = function (file) {
    var self = this;
    var stored = window.localStorage.getItem(this.storeKey(file));
    var resumed = stored
      ? request(this.form, "GET", this.partUrl(stored, "")).then(
          function (upload) { return upload.state === "uploading" ? upload : null; },
          function () { return null; }
        )
      : Promise.resolve(null);
    return resumed.then(function (upload) {
      if (upload) { return upload; }
      var body = {
        filename: file.name,
        size: file.size,
        text_fields: fieldList(self.textFields.value),
        metadata_fields: fieldList(self.metadataFields.value)
      };
      if (self.formatSelect.value) { body.format = self.formatSelect.value; }
      if (!body.text_fields.length) { delete body.text_fields; }
      return request(self.form, "POST", self.form.dataset.startUrl, JSON.stringify(body), "application/json");
    }).then(function (upload) {
      window.localStorage.setItem(self.storeKey(file), String(upload.id));
      return upload;
    });
  };

  Uploader.prototype.sendParts = function (file, upload) {
    var self = this;
    var count = Math.max(1, Math.ceil(file.size / this.partSize));
    var arrived = {};
    (upload.parts_received || []).forEach(function (n) { arrived[n] = true; });
    var done = 0;
    for (var n = 1; n <= count; n += 1) {
      if (arrived[n]) { done += Math.min(this.partSize, file.size - (n - 1) * this.partSize); }
    }
    var already = Object.keys(arrived).length;
    this.show(done, file.size, already
      ? "Resuming: " + already + " of " + count + " parts had arrived."
      : "Uploading " + file.name + " in " + count + " part" + (count === 1 ? "" : "s") + "…");
    var chain = Promise.resolve();
    for (var number = 1; number <= count; number += 1) {
      if (arrived[number]) { continue; }
      chain = chain.then(this.sendPart.bind(this, file, upload.id, number, count, function (size) {
        done += size;
        self.show(done, file.size);
      }));
    }
    return chain;
  };

  Uploader.prototype.sendPart = function (file, id, number, count, onSent) {
    var start = (number - 1) * this.partSize;
    var blob = file.slice(start, Math.min(start + this.partSize, file.size));
    var self = this;
    return withRetries(this.retries, function () {
      return request(self.form, "PUT", self.partUrl(id, "/parts/" + number), blob, "application/octet-stream");
    }).then(function () {
      self.status.textContent = "Sent part " + number + " of " + count + ".";
      onSent(blob.size);
    });
  };

  Uploader.prototype.onSubmit = function (event) {
    event.preventDefault();
    if (this.busy) { return; }
    var file = this.file();
    if (!file) {
      this.show(0, 0, "Choose a file first.");
      this.fileInput.focus();
      return;
    }
    if (file.size === 0) { this.show(0, 0, "The file is empty."); return; }
    if (file.size > parseInt(this.form.dataset.maxBytes, 10)) {
      this.show(0, 0, "The file is larger than uploads may be.");
      return;
    }
    this.run(file);
  };

  Uploader.prototype.run = function (file) {
    var self = this;
    var key = this.storeKey(file);
    // Read at each upload, not once: the part size may be tuned on the element.
    this.partSize = Math.max(1, parseInt(this.form.dataset.partSize, 10) || 8388608);
    this.retries = Math.max(0, parseInt(this.form.dataset.retries, 10) || 0);
    this.setBusy(true);
    this.resume.hidden = true;
    this.show(0, file.size, "Starting the upload…");
    this.open(file).then(function (upload) {
      return self.sendParts(file, upload).then(function () {
        self.status.textContent = "All parts sent; checking the file…";
        return withRetries(self.retries, function () {
          return request(self.form, "POST", self.partUrl(upload.id, "/complete"), null);
        });
      });
    }).then(function (upload) {
      window.localStorage.removeItem(key);
      self.show(file.size, file.size,
        "Uploaded " + upload.filename + ". Add more files, or close uploads to start processing.");
      self.form.reset();
      self.detected.textContent = "";
      self.fieldNames.hidden = false;
    }).catch(function (error) {
      var message = error instanceof ApiError ? error.message : String(error);
      if (retryable(error)) {
        self.resume.hidden = false;
        self.status.textContent = "Upload paused: " + message + " Resume when the connection is back.";
      } else {
        // Refused (the content, the size, the state): this upload cannot continue as it is.
        window.localStorage.removeItem(key);
        self.status.textContent = "Upload refused: " + message;
      }
    }).then(function () {
      self.setBusy(false);
      // The version page lists the uploads: let it show this one as it now stands.
      document.body.dispatchEvent(new CustomEvent("sealroom:uploaded", { bubbles: true }));
    });
  };

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-upload]").forEach(function (form) { new Uploader(form); });
  });
})();
