"""Boot sectors that make a guest do exactly one thing with no OS: spin, idle, or write its disk.

SeaBIOS loads sector 0 of the boot disk at 0000:7C00 and jumps to it in 16-bit real mode. The
programs are hand-assembled here (no assembler on the test bed); each instruction is one
`bytes` line with its mnemonic beside it.

    python3 bootsector.py busy OUT
    python3 bootsector.py idle OUT
    python3 bootsector.py writer OUT --start-lba 2048 --stride 128 --max-lba 65536 --wait-us 20000
    python3 bootsector.py filler OUT --mib 16
    python3 bootsector.py dirtier OUT --mib 16
"""

import argparse
import struct
import sys

SECTOR = 512
LOAD_ADDR = 0x7C00


def _sector(code: bytes) -> bytes:
    if len(code) > SECTOR - 2:
        raise ValueError(f"boot code is {len(code)} bytes, at most {SECTOR - 2} fit")
    return code + bytes(SECTOR - 2 - len(code)) + b"\x55\xaa"  # the BIOS boot signature


def busy() -> bytes:
    """`jmp $`: the vCPU spins at 100 % of a core."""
    return _sector(b"\xeb\xfe")


def idle() -> bytes:
    """`hlt; jmp back to hlt`: the vCPU sleeps until each timer interrupt (~1 % of a core)."""
    return _sector(b"\xf4\xeb\xfd")


def writer_write_count(start_lba: int, stride: int, max_lba: int) -> int:
    """How many sectors the writer writes: LBAs start, start+stride, ... up to max_lba."""
    return (max_lba - start_lba) // stride + 1


def writer(start_lba: int, stride: int, max_lba: int, wait_us: int) -> bytes:
    """Write one 512-byte sector (the boot sector itself) at start_lba, start_lba+stride, ... up
    to max_lba through BIOS int 13h AH=43h on drive 0x80 (the boot disk), waiting wait_us
    microseconds (int 15h AH=86h) after each write, then idle in a hlt loop.

    Guest writes are the only thing that moves QEMU's highest written offset, which libvirt
    reports as block.N.allocation.
    """
    if not (0 <= start_lba <= max_lba < 2**32):
        raise ValueError("need 0 <= start_lba <= max_lba < 2**32")
    if not 1 <= stride < 2**32:
        raise ValueError("stride must be 1 .. 2**32-1 sectors")
    if not 0 <= wait_us < 2**32:
        raise ValueError("wait_us must fit in 32 bits (CX:DX)")
    count = writer_write_count(start_lba, stride, max_lba)
    if count > 0xFFFF:
        raise ValueError(f"{count} writes; the counter is 16 bits, raise the stride")

    dap = LOAD_ADDR + 0x40  # disk address packet, placed after the code
    counter = dap + 0x10  # writes left
    w = lambda v: struct.pack("<H", v)  # noqa: E731 - little-endian imm16 / disp16
    loop = [
        # The BIOS writes the number of sectors actually transferred back into the packet:
        # reset it so one failed write cannot turn the rest into 0-sector writes.
        b"\xc7\x06" + w(dap + 2) + w(1),  #        mov word [dap.count], 1
        b"\xbe" + w(dap),  #                         mov si, dap
        b"\xb4\x43",  #                              mov ah, 43h   ; extended write
        b"\xb0\x00",  #                              mov al, 0     ; no verify
        b"\xb2\x80",  #                              mov dl, 80h   ; first hard disk = boot disk
        b"\xcd\x13",  #                              int 13h
        b"\xb4\x86",  #                              mov ah, 86h   ; wait CX:DX microseconds
        b"\xb9" + w(wait_us >> 16),  #               mov cx, wait_hi
        b"\xba" + w(wait_us & 0xFFFF),  #            mov dx, wait_lo
        b"\xcd\x15",  #                              int 15h
        b"\x81\x06" + w(dap + 8) + w(stride & 0xFFFF),  # add word [dap.lba], stride_lo
        b"\x81\x16" + w(dap + 10) + w(stride >> 16),  #   adc word [dap.lba+2], stride_hi
        b"\xff\x0e" + w(counter),  #                 dec word [counter]
    ]
    prologue = [
        b"\xfa",  #                                  cli
        b"\x31\xc0",  #                              xor ax, ax
        b"\x8e\xd8",  #                              mov ds, ax    ; our data is at 0000:7Cxx
        b"\x8e\xd0",  #                              mov ss, ax
        b"\xbc" + w(LOAD_ADDR),  #                   mov sp, 7C00h ; stack grows down below us
        b"\xfb",  #                                  sti           ; int 15h/86h needs timer IRQs
    ]
    body = b"".join(loop)
    jnz_back = b"\x75" + struct.pack("<b", -(len(body) + 2))  # jnz loop (rel8 from the next insn)
    halt = b"\xf4\xeb\xfd"  #                        hlt ; jmp hlt
    code = b"".join(prologue) + body + jnz_back + halt
    if len(code) > 0x40:
        raise AssertionError("code overlaps the disk address packet")
    packet = struct.pack(
        "<BBHHHQ",
        0x10,  # packet size
        0,  # reserved
        1,  # sectors to transfer
        LOAD_ADDR,  # buffer offset: write the boot sector itself (non-zero data)
        0,  # buffer segment
        start_lba,
    )
    return _sector(code.ljust(0x40, b"\x00") + packet + w(count))


# Where the memory programs write: from 1 MiB up (below it are the BIOS's areas).
MEMORY_BASE = 0x100000
PAGE = 4096


def memory_program(mib: int, forever: bool) -> bytes:
    """Enter 32-bit protected mode and write one non-zero dword into every 4 KiB page of ``mib``
    MiB from 1 MiB up: once, then halt (``filler``), or pass after pass with a new value each time
    (``dirtier``).

    A page with one non-zero dword is sent whole by a live migration (only all-zero pages cost
    nothing), so the filler makes a bandwidth-capped migration last mib / bandwidth seconds, and the
    dirtier re-dirties every page within microseconds: a migration that cannot converge.
    """
    if not 1 <= mib <= 3072:
        raise ValueError("mib must be 1 .. 3072")
    pages = mib * 1024 * 1024 // PAGE
    w = lambda v: struct.pack("<H", v)  # noqa: E731 - imm16 / disp16
    d = lambda v: struct.pack("<I", v)  # noqa: E731 - imm32
    gdt_at = LOAD_ADDR + 0x80
    gdtr_at = gdt_at + 24
    real = [
        b"\xfa",  #                                  cli
        b"\x31\xc0",  #                              xor ax, ax
        b"\x8e\xd8",  #                              mov ds, ax
        b"\xe4\x92",  #                              in al, 92h    ; fast A20 gate on
        b"\x0c\x02",  #                              or al, 2
        b"\xe6\x92",  #                              out 92h, al
        b"\x0f\x01\x16" + w(gdtr_at),  #             lgdt [gdtr]
        b"\x0f\x20\xc0",  #                          mov eax, cr0
        b"\x0c\x01",  #                              or al, 1      ; PE
        b"\x0f\x22\xc0",  #                          mov cr0, eax
    ]
    far_jmp_len = 5
    pm_at = LOAD_ADDR + len(b"".join(real)) + far_jmp_len
    real.append(b"\xea" + w(pm_at) + w(0x08))  #     jmp 08h:pm    ; flat 32-bit code
    inner = [
        b"\x89\x17",  #                              mov [edi], edx
        b"\x81\xc7" + d(PAGE),  #                    add edi, 4096
    ]
    inner_len = len(b"".join(inner)) + 2
    pass_ = [
        b"\x42",  #                                  inc edx       ; a new non-zero value per pass
        b"\xbf" + d(MEMORY_BASE),  #                 mov edi, base
        b"\xb9" + d(pages),  #                       mov ecx, pages
        *inner,
        b"\xe2" + struct.pack("<b", -inner_len),  #  loop inner
    ]
    pass_len = len(b"".join(pass_))
    if forever:
        tail = b"\xeb" + struct.pack("<b", -(pass_len + 2))  # jmp pass
    else:
        tail = b"\xf4\xeb\xfd"  #                    hlt ; jmp hlt (interrupts stay off)
    protected = [
        b"\x66\xb8\x10\x00",  #                      mov ax, 10h   ; flat data segment
        b"\x8e\xd8",  #                              mov ds, ax
        b"\x8e\xc0",  #                              mov es, ax
        b"\x8e\xd0",  #                              mov ss, ax
        b"\x31\xd2",  #                              xor edx, edx
        *pass_,
        tail,
    ]
    code = b"".join(real) + b"".join(protected)
    if LOAD_ADDR + len(code) > gdt_at:
        raise AssertionError("code overlaps the GDT")
    gdt = (struct.pack("<Q", 0)
           + struct.pack("<Q", 0x00CF9A000000FFFF)  # 08h: code, base 0, 4 GiB, 32-bit
           + struct.pack("<Q", 0x00CF92000000FFFF))  # 10h: data, base 0, 4 GiB
    gdtr = w(len(gdt) - 1) + d(gdt_at)
    return _sector(code.ljust(gdt_at - LOAD_ADDR, b"\x00") + gdt + gdtr)


def build(kind: str, **params) -> bytes:
    """The boot sector for kind 'busy', 'idle', 'writer' (writer()'s keywords), 'filler' or
    'dirtier' (keyword mib)."""
    if kind == "busy":
        return busy()
    if kind == "idle":
        return idle()
    if kind == "writer":
        return writer(**params)
    if kind in ("filler", "dirtier"):
        # The dirtier's default is small: a pass over it is quick even at --bandwidth 1.
        return memory_program(params.get("mib", 16 if kind == "filler" else 2), forever=kind == "dirtier")
    raise ValueError(f"unknown boot sector kind {kind!r}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=["busy", "idle", "writer", "filler", "dirtier"])
    p.add_argument("out")
    p.add_argument("--start-lba", type=int, default=2048)
    p.add_argument("--stride", type=int, default=128)
    p.add_argument("--max-lba", type=int, default=65536)
    p.add_argument("--wait-us", type=int, default=20000)
    p.add_argument("--mib", type=int, default=None, help="filler/dirtier: MiB of memory written (16 / 2)")
    a = p.parse_args(argv)
    params = {}
    if a.kind == "writer":
        params = dict(start_lba=a.start_lba, stride=a.stride, max_lba=a.max_lba, wait_us=a.wait_us)
    elif a.kind in ("filler", "dirtier"):
        params = dict(mib=a.mib) if a.mib else {}
    with open(a.out, "wb") as f:
        f.write(build(a.kind, **params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
