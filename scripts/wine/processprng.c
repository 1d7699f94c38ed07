/* A stand-in bcryptprimitives.dll for Wine 8, which lacks it: Rust's std (>= 1.78) imports
 * ProcessPrng from it, and without it every Rust .exe exits at once with code 53 under Wine.
 * ProcessPrng fills a buffer with random bytes; here it is BCryptGenRandom with the system RNG,
 * which Wine has. Built by scripts/wine/runner.sh with mingw; used only to run the Windows
 * tests under Wine, never shipped. */
#include <windows.h>
#include <bcrypt.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0)
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
