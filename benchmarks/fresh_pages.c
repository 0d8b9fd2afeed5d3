// What it costs to put 64 MiB into fresh memory, against a copy into warm
// memory: anonymous pages faulted in 4 KiB at a time or as transparent huge
// pages (MADV_HUGEPAGE), a fresh memfd written with pwrite or through a
// mapping, a reused one, and reading a memfd out. The process pool's large
// bodies pay these (see crates/troika/src/process/framebuf.rs).
//
//   cc -O2 -o /tmp/fresh_pages benchmarks/fresh_pages.c && /tmp/fresh_pages
//
// Each line is the best of 5, in ms; compare lines within one run.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <time.h>
#include <fcntl.h>
#include <stdint.h>
#define N (64u<<20)
volatile char sink;
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e3+t.tv_nsec/1e6;}
static char *src,*warm;
#define T(name, body) { double best=1e9; for(int r=0;r<5;r++){ double t0=now(); body; double t=now()-t0; if(t<best)best=t;} printf("%-45s %8.2f ms\n", name, best); }
static void huge(char*d){uintptr_t a=((uintptr_t)d)&~4095ul; madvise((void*)a,N+((uintptr_t)d-a),MADV_HUGEPAGE);}
int main(){
  src=malloc(N); warm=malloc(N); for(size_t i=0;i<N;i++){src[i]=i%251;} memset(warm,1,N);
  T("memcpy warm", memcpy(warm,src,N));
  T("malloc fresh + memcpy + free", {char*d=malloc(N);memcpy(d,src,N);sink=d[N-1];free(d);});
  T("malloc + HUGEPAGE + memcpy + free", {char*d=malloc(N);huge(d);memcpy(d,src,N);sink=d[N-1];free(d);});
  T("memfd create+pwrite+close", {int fd=memfd_create("x",MFD_CLOEXEC);pwrite(fd,src,N,0);close(fd);});
  T("memfd create+fallocate+close", {int fd=memfd_create("x",MFD_CLOEXEC);fallocate(fd,0,0,N);close(fd);});
  T("memfd create+ftruncate+close", {int fd=memfd_create("x",MFD_CLOEXEC);ftruncate(fd,N);close(fd);});
  {int fd=memfd_create("x",MFD_CLOEXEC);pwrite(fd,src,N,0);
  T("reused memfd pwrite", {pwrite(fd,src,N,0);});
  char*m=mmap(0,N,PROT_READ|PROT_WRITE,MAP_SHARED|MAP_POPULATE,fd,0);
  T("reused memfd mapped memcpy", {memcpy(m,src,N);});
  T("reused memfd pread to warm", {pread(fd,warm,N,0);});
  T("reused memfd pread to fresh HUGE", {char*d=malloc(N);huge(d);pread(fd,d,N,0);sink=d[N-1];free(d);});
  T("reused mapped memcpy to fresh HUGE", {char*d=malloc(N);huge(d);memcpy(d,m,N);sink=d[N-1];free(d);});
  T("mmap RO POP + memcpy to fresh HUGE +unmap", {char*d=malloc(N);huge(d);char*m2=mmap(0,N,PROT_READ,MAP_SHARED|MAP_POPULATE,fd,0);memcpy(d,m2,N);munmap(m2,N);sink=d[N-1];free(d);});
  T("mmap RO noPOP + memcpy to fresh HUGE +unmap", {char*d=malloc(N);huge(d);char*m2=mmap(0,N,PROT_READ,MAP_SHARED,fd,0);memcpy(d,m2,N);munmap(m2,N);sink=d[N-1];free(d);});
  T("mmap RO POP + unmap only", {char*m2=mmap(0,N,PROT_READ,MAP_SHARED|MAP_POPULATE,fd,0);munmap(m2,N);});
  close(fd);}
  return 0;}
