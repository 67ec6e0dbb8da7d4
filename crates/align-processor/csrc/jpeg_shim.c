/* libjpeg(-turbo) decoding for align-processor, set up the way Pillow's JpegDecode.c does:
 * default JDCT_ISLOW, fancy upsampling, libjpeg's own colour-space guess (Pillow passes no
 * jpegmode), output JCS_GRAYSCALE / JCS_RGB / JCS_CMYK for 1 / 3 / 4 components.
 *
 * Errors never reach libjpeg's default error_exit (which calls exit()): they longjmp back into
 * the function that called libjpeg, which returns -1 with the message. Warnings are ignored like
 * Pillow ignores them, except "premature end of data": Pillow refuses truncated files. */
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include "jpeglib.h"
#include "jerror.h"

/* Pathological progressive files can have thousands of scans (a CPU bomb); real ones have
 * about ten. */
#define ALIGN_JPEG_MAX_SCANS 1000

struct align_err {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    int truncated;
};

struct align_jpeg_info {
    unsigned int width;
    unsigned int height;
    int components;
    int progressive;
    char message[JMSG_LENGTH_MAX];
};

static void align_error_exit(j_common_ptr cinfo) {
    struct align_err *err = (struct align_err *)cinfo->err;
    longjmp(err->jump, 1);
}

static void align_emit_message(j_common_ptr cinfo, int level) {
    struct align_err *err = (struct align_err *)cinfo->err;
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
        err->truncated = 1;
    }
}

static void align_progress(j_common_ptr cinfo) {
    if (cinfo->is_decompressor &&
        ((j_decompress_ptr)cinfo)->input_scan_number > ALIGN_JPEG_MAX_SCANS) {
        longjmp(((struct align_err *)cinfo->err)->jump, 2);
    }
}

static void set_message(j_common_ptr cinfo, int code, char *message) {
    if (code == 2) {
        snprintf(message, JMSG_LENGTH_MAX, "more than %d progressive scans", ALIGN_JPEG_MAX_SCANS);
    } else {
        cinfo->err->format_message(cinfo, message);
    }
}

static void setup(j_decompress_ptr cinfo, struct align_err *err,
                  struct jpeg_progress_mgr *progress) {
    memset(err, 0, sizeof(*err));
    cinfo->err = jpeg_std_error(&err->pub);
    err->pub.error_exit = align_error_exit;
    err->pub.emit_message = align_emit_message;
    jpeg_create_decompress(cinfo);
    progress->progress_monitor = align_progress;
    cinfo->progress = progress;
}

/* Reads the header only. 0 on success, -1 with info->message on error. */
int align_jpeg_header(const unsigned char *data, unsigned long len,
                      struct align_jpeg_info *info) {
    struct jpeg_decompress_struct cinfo;
    struct align_err err;
    struct jpeg_progress_mgr progress;
    int code;
    memset(info, 0, sizeof(*info));
    setup(&cinfo, &err, &progress);
    if ((code = setjmp(err.jump)) != 0) {
        set_message((j_common_ptr)&cinfo, code, info->message);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    jpeg_mem_src(&cinfo, data, len);
    jpeg_read_header(&cinfo, TRUE);
    info->width = cinfo.image_width;
    info->height = cinfo.image_height;
    info->components = cinfo.num_components;
    info->progressive = cinfo.progressive_mode;
    jpeg_destroy_decompress(&cinfo);
    return 0;
}

/* Decodes into `out` (`width * height * out_components` bytes, where out_components is 1, 3 or
 * 4 for 1, 3 or 4 image components). `max_memory` bounds libjpeg's whole-image buffers
 * (progressive files). 0 on success, -1 with `message` (JMSG_LENGTH_MAX bytes) on error. */
int align_jpeg_decode(const unsigned char *data, unsigned long len, long max_memory,
                      unsigned char *out, unsigned long out_len, char *message) {
    struct jpeg_decompress_struct cinfo;
    struct align_err err;
    struct jpeg_progress_mgr progress;
    int code;
    unsigned long row_bytes;
    message[0] = 0;
    setup(&cinfo, &err, &progress);
    if ((code = setjmp(err.jump)) != 0) {
        set_message((j_common_ptr)&cinfo, code, message);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    cinfo.mem->max_memory_to_use = max_memory;
    jpeg_mem_src(&cinfo, data, len);
    jpeg_read_header(&cinfo, TRUE);
    switch (cinfo.num_components) {
    case 1: cinfo.out_color_space = JCS_GRAYSCALE; break;
    case 3: cinfo.out_color_space = JCS_RGB; break;
    case 4: cinfo.out_color_space = JCS_CMYK; break;
    default:
        snprintf(message, JMSG_LENGTH_MAX, "cannot handle %d-component images",
                 cinfo.num_components);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    jpeg_start_decompress(&cinfo);
    row_bytes = (unsigned long)cinfo.output_width * (unsigned long)cinfo.output_components;
    if (row_bytes * cinfo.output_height != out_len) {
        snprintf(message, JMSG_LENGTH_MAX, "output size %lu does not match the buffer (%lu)",
                 row_bytes * cinfo.output_height, out_len);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = out + (unsigned long)cinfo.output_scanline * row_bytes;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    if (err.truncated) {
        snprintf(message, JMSG_LENGTH_MAX, "premature end of JPEG data (truncated file)");
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    /* No jpeg_finish_decompress: what follows the last scanline (EOI, trailing bytes) does not
     * change the pixels. */
    jpeg_destroy_decompress(&cinfo);
    return 0;
}
