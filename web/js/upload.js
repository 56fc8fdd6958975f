// Uploads with progress: fetch() cannot report how much of a request body has been sent, an
// XMLHttpRequest can.
export function upload_with_progress(url, token, bytes, on_progress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.setRequestHeader("Authorization", "Bearer " + token);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) on_progress(e.loaded, e.total);
    };
    xhr.onload = () => resolve([xhr.status, xhr.responseText]);
    xhr.onerror = () => reject(new Error("cannot reach the hearth to upload"));
    xhr.send(bytes);
  });
}
