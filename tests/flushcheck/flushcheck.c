/*
 * flushcheck: an LD_PRELOAD library that records, in order, what a process does to the files
 * under one folder, so a test can check that data was flushed before it was acknowledged.
 *
 *   FLUSHCHECK_DIR  the folder watched (absolute path)
 *   FLUSHCHECK_LOG  the log, appended to with O_APPEND (a test may append its own lines)
 *
 * Lines: "W path" a write; "P n path" a write carrying the bytes FLUSHPROBE<n>; "C path" a file
 * or folder created; "R from to" a rename; "B tid path" a flush (fsync or fdatasync) begins; "E tid path"
 * it returned 0; "F path" a sync_file_range, which does not flush the drive and is not counted.
 *
 * Each flush is delayed FLUSHCHECK_DELAY_US (default 20000) before it runs, so that an
 * acknowledgement sent without waiting for the flush reaches the test before "E" is logged.
 *
 * Fault injection: with FLUSHCHECK_FAIL_TRIGGER set, when that file exists the next flush of a
 * file whose path contains FLUSHCHECK_FAIL_MATCH fails with EIO without flushing (logged "X tid
 * path"), and the trigger file is removed: one failure per trigger. With FLUSHCHECK_HOLD_TRIGGER
 * set, a flush of such a file waits while that file exists (logged "H tid path" once, before it
 * waits), then goes on (and fails, if the failure trigger is there).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static char watched[4096];
static size_t watched_len;
static int log_fd = -1;
static useconds_t delay_us = 20000;
static const char *fail_trigger;
static const char *fail_match;
static const char *hold_trigger;

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*real_pwritev64)(int, const struct iovec *, int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_sync_file_range)(int, off_t, off_t, unsigned int);
static int (*real_rename)(const char *, const char *);
static int (*real_renameat)(int, const char *, int, const char *);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_mkdir)(const char *, mode_t);
static int (*real_mkdirat)(int, const char *, mode_t);

__attribute__((constructor)) static void init(void) {
    real_write = dlsym(RTLD_NEXT, "write");
    real_pwrite = dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_writev = dlsym(RTLD_NEXT, "writev");
    real_pwritev = dlsym(RTLD_NEXT, "pwritev");
    real_pwritev64 = dlsym(RTLD_NEXT, "pwritev64");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_sync_file_range = dlsym(RTLD_NEXT, "sync_file_range");
    real_rename = dlsym(RTLD_NEXT, "rename");
    real_renameat = dlsym(RTLD_NEXT, "renameat");
    real_openat = dlsym(RTLD_NEXT, "openat");
    real_openat64 = dlsym(RTLD_NEXT, "openat64");
    real_mkdir = dlsym(RTLD_NEXT, "mkdir");
    real_mkdirat = dlsym(RTLD_NEXT, "mkdirat");
    const char *dir = getenv("FLUSHCHECK_DIR");
    const char *log = getenv("FLUSHCHECK_LOG");
    const char *delay = getenv("FLUSHCHECK_DELAY_US");
    if (delay) delay_us = (useconds_t)atol(delay);
    fail_trigger = getenv("FLUSHCHECK_FAIL_TRIGGER");
    fail_match = getenv("FLUSHCHECK_FAIL_MATCH");
    hold_trigger = getenv("FLUSHCHECK_HOLD_TRIGGER");
    if (!dir || !log || strlen(dir) >= sizeof(watched) - 1) return;
    strcpy(watched, dir);
    watched_len = strlen(watched);
    while (watched_len > 1 && watched[watched_len - 1] == '/') watched[--watched_len] = 0;
    log_fd = (int)syscall(SYS_open, log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
}

static int is_watched(const char *path) {
    return log_fd >= 0 && strncmp(path, watched, watched_len) == 0 &&
           (path[watched_len] == '/' || path[watched_len] == 0);
}

/* One line per call to write(2) on an O_APPEND file: lines from threads and processes never mix. */
static void say(const char *fmt, ...) {
    char line[8192];
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(line, sizeof(line) - 1, fmt, args);
    va_end(args);
    if (n < 0) return;
    if (n > (int)sizeof(line) - 2) n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    syscall(SYS_write, log_fd, line, (size_t)n);
}

/* The watched path an open file or folder has, or 0. */
static int path_of(int fd, char *out, size_t size) {
    if (log_fd < 0 || fd == log_fd) return 0;
    struct stat st;
    if (fstat(fd, &st) != 0 || !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) return 0;
    char link[64];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, size - 1);
    if (n <= 0) return 0;
    out[n] = 0;
    return is_watched(out);
}

/* An absolute form of a path relative to `dirfd`, for renames and creations. */
static void absolute(int dirfd, const char *path, char *out, size_t size) {
    char base[4096] = "";
    if (path[0] == '/') {
        snprintf(out, size, "%s", path);
        return;
    }
    if (dirfd == AT_FDCWD) {
        if (!getcwd(base, sizeof(base))) base[0] = 0;
    } else {
        char link[64];
        snprintf(link, sizeof(link), "/proc/self/fd/%d", dirfd);
        ssize_t n = readlink(link, base, sizeof(base) - 1);
        base[n > 0 ? n : 0] = 0;
    }
    snprintf(out, size, "%s/%s", base, path);
}

static void probes(const char *path, const void *buf, size_t len) {
    const char *p = buf, *end = p + len;
    while (p < end) {
        const char *hit = memmem(p, (size_t)(end - p), "FLUSHPROBE", 10);
        if (!hit) break;
        const char *digits = hit + 10;
        long n = 0;
        int any = 0;
        while (digits < end && *digits >= '0' && *digits <= '9') {
            n = n * 10 + (*digits++ - '0');
            any = 1;
        }
        if (any) say("P %ld %s", n, path);
        p = hit + 10;
    }
}

static void wrote(int fd, const struct iovec *iov, int count) {
    char path[4096];
    if (!path_of(fd, path, sizeof(path))) return;
    for (int i = 0; i < count; i++) probes(path, iov[i].iov_base, iov[i].iov_len);
    say("W %s", path);
}

static void wrote_one(int fd, const void *buf, size_t len) {
    struct iovec iov = {(void *)buf, len};
    wrote(fd, &iov, 1);
}

ssize_t write(int fd, const void *buf, size_t len) {
    ssize_t n = real_write(fd, buf, len);
    if (n > 0) wrote_one(fd, buf, (size_t)n);
    return n;
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off) {
    ssize_t n = real_pwrite(fd, buf, len, off);
    if (n > 0) wrote_one(fd, buf, (size_t)n);
    return n;
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off) {
    ssize_t n = real_pwrite64(fd, buf, len, off);
    if (n > 0) wrote_one(fd, buf, (size_t)n);
    return n;
}

ssize_t writev(int fd, const struct iovec *iov, int count) {
    ssize_t n = real_writev(fd, iov, count);
    if (n > 0) wrote(fd, iov, count);
    return n;
}

ssize_t pwritev(int fd, const struct iovec *iov, int count, off_t off) {
    ssize_t n = real_pwritev(fd, iov, count, off);
    if (n > 0) wrote(fd, iov, count);
    return n;
}

ssize_t pwritev64(int fd, const struct iovec *iov, int count, off_t off) {
    ssize_t n = real_pwritev64(fd, iov, count, off);
    if (n > 0) wrote(fd, iov, count);
    return n;
}

static int flush(int fd, int (*real)(int)) {
    char path[4096];
    if (!path_of(fd, path, sizeof(path))) return real(fd);
    long tid = syscall(SYS_gettid);
    if (hold_trigger && fail_match && strstr(path, fail_match) && access(hold_trigger, F_OK) == 0) {
        say("H %ld %s", tid, path);
        while (access(hold_trigger, F_OK) == 0) usleep(1000);
    }
    if (fail_trigger && fail_match && strstr(path, fail_match) &&
        unlink(fail_trigger) == 0) {
        say("X %ld %s", tid, path);
        errno = EIO;
        return -1;
    }
    say("B %ld %s", tid, path);
    usleep(delay_us);
    int rc = real(fd);
    int saved = errno;
    if (rc == 0) say("E %ld %s", tid, path);
    errno = saved;
    return rc;
}

int fsync(int fd) { return flush(fd, real_fsync); }
int fdatasync(int fd) { return flush(fd, real_fdatasync); }

int sync_file_range(int fd, off_t off, off_t len, unsigned int flags) {
    char path[4096];
    if (path_of(fd, path, sizeof(path))) say("F %s", path);
    return real_sync_file_range(fd, off, len, flags);
}

static void renamed(int from_dir, const char *from, int to_dir, const char *to) {
    char a[4096], b[4096];
    absolute(from_dir, from, a, sizeof(a));
    absolute(to_dir, to, b, sizeof(b));
    if (is_watched(a) || is_watched(b)) say("R %s %s", a, b);
}

int rename(const char *from, const char *to) {
    int rc = real_rename(from, to);
    if (rc == 0) renamed(AT_FDCWD, from, AT_FDCWD, to);
    return rc;
}

int renameat(int from_dir, const char *from, int to_dir, const char *to) {
    int rc = real_renameat(from_dir, from, to_dir, to);
    if (rc == 0) renamed(from_dir, from, to_dir, to);
    return rc;
}

/* An open with O_CREAT that made a new file: its folder must be flushed for the name to last. */
static int opened(int dirfd, const char *path, int flags, mode_t mode,
                  int (*real_at)(int, const char *, int, ...)) {
    if (!(flags & O_CREAT) || log_fd < 0) return real_at(dirfd, path, flags, mode);
    char full[4096];
    absolute(dirfd, path, full, sizeof(full));
    struct stat st;
    int existed = stat(full, &st) == 0;
    int fd = real_at(dirfd, path, flags, mode);
    if (fd >= 0 && !existed && is_watched(full)) say("C %s", full);
    return fd;
}

static mode_t mode_arg(int flags, va_list args) {
    return (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(args, int) : 0;
}

int open(const char *path, int flags, ...) {
    va_list args;
    va_start(args, flags);
    mode_t mode = mode_arg(flags, args);
    va_end(args);
    return opened(AT_FDCWD, path, flags, mode, real_openat);
}

int open64(const char *path, int flags, ...) {
    va_list args;
    va_start(args, flags);
    mode_t mode = mode_arg(flags, args);
    va_end(args);
    return opened(AT_FDCWD, path, flags, mode, real_openat64);
}

int openat(int dirfd, const char *path, int flags, ...) {
    va_list args;
    va_start(args, flags);
    mode_t mode = mode_arg(flags, args);
    va_end(args);
    return opened(dirfd, path, flags, mode, real_openat);
}

int openat64(int dirfd, const char *path, int flags, ...) {
    va_list args;
    va_start(args, flags);
    mode_t mode = mode_arg(flags, args);
    va_end(args);
    return opened(dirfd, path, flags, mode, real_openat64);
}

int mkdirat(int dirfd, const char *path, mode_t mode) {
    int rc = real_mkdirat(dirfd, path, mode);
    if (rc == 0 && log_fd >= 0) {
        char full[4096];
        absolute(dirfd, path, full, sizeof(full));
        if (is_watched(full)) say("C %s", full);
    }
    return rc;
}

int mkdir(const char *path, mode_t mode) {
    int rc = real_mkdir(path, mode);
    if (rc == 0 && log_fd >= 0) {
        char full[4096];
        absolute(AT_FDCWD, path, full, sizeof(full));
        if (is_watched(full)) say("C %s", full);
    }
    return rc;
}
