"""Boot sectors that make a guest do exactly one thing with no OS: spin, idle, or write its disk.

SeaBIOS loads sector 0 of the boot disk at 0000:7C00 and jumps to it in 16-bit real mode. The
programs are hand-assembled here (no assembler on the test bed); each instruction is one
`bytes` line with its mnemonic beside it.

    python3 bootsector.py busy OUT
    python3 bootsector.py idle OUT
    python3 bootsector.py writer OUT --start-lba 2048 --stride 128 --max-lba 65536 --wait-us 20000
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


def build(kind: str, **writer_params) -> bytes:
    """The boot sector for kind 'busy', 'idle' or 'writer' (writer takes writer()'s keywords)."""
    if kind == "busy":
        return busy()
    if kind == "idle":
        return idle()
    if kind == "writer":
        return writer(**writer_params)
    raise ValueError(f"unknown boot sector kind {kind!r}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=["busy", "idle", "writer"])
    p.add_argument("out")
    p.add_argument("--start-lba", type=int, default=2048)
    p.add_argument("--stride", type=int, default=128)
    p.add_argument("--max-lba", type=int, default=65536)
    p.add_argument("--wait-us", type=int, default=20000)
    a = p.parse_args(argv)
    params = {}
    if a.kind == "writer":
        params = dict(start_lba=a.start_lba, stride=a.stride, max_lba=a.max_lba, wait_us=a.wait_us)
    with open(a.out, "wb") as f:
        f.write(build(a.kind, **params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
