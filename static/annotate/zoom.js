// Click-to-zoom for images (annotator and review pages): the dialog shows the image scaled to
// fill the window, so a small image is enlarged, never shown smaller than on the page; a click
// on the zoomed image doubles that, another click goes back.

export class ImageZoom {
  constructor(dialog) {
    this.dialog = dialog;
    this.img = dialog.querySelector("[data-zoom-img]");
    this.img.addEventListener("load", () => this.fit(false));
  }

  open(src, alt = "") {
    this.img.alt = alt;
    this.img.src = src;
    this.dialog.showModal();
    this.fit(false);
  }

  toggle() {
    this.fit(!this.img.classList.contains("zoomed"));
  }

  fit(double) {
    const { naturalWidth: w, naturalHeight: h } = this.img;
    if (!w || !h) return;
    const scale = Math.min((window.innerWidth * 0.9) / w, (window.innerHeight * 0.8) / h);
    this.img.style.width = `${Math.round(w * scale * (double ? 2 : 1))}px`;
    this.img.classList.toggle("upscaled", scale > 1);
    this.img.classList.toggle("zoomed", double);
  }
}
