//! Writing a state dict as `torch.save` does (the zip format that `torch.load` reads, also under
//! `weights_only=True`): a zip archive of uncompressed entries `<name>/data.pkl` (a protocol-2
//! pickle of `OrderedDict(name → torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False,
//! OrderedDict()))`, storages as persistent ids `("storage", torch.FloatStorage, key, "cpu", numel)`),
//! `<name>/data/<key>` (each tensor's float32 little-endian bytes, 64-byte aligned as torch aligns
//! them), `<name>/version` (`3`) and `<name>/byteorder` (`little`).

use crate::tensors::NamedTensors;

/// The bytes of a `torch.save(state_dict, f)` file whose archive name is `archive`.
pub fn state_dict_bytes(archive: &str, tensors: &NamedTensors) -> Vec<u8> {
    let mut entries: Vec<(String, Vec<u8>)> = vec![(format!("{archive}/data.pkl"), pickle(tensors))];
    entries.push((format!("{archive}/byteorder"), b"little".to_vec()));
    for (key, t) in tensors.iter().enumerate() {
        let bytes: Vec<u8> = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        entries.push((format!("{archive}/data/{key}"), bytes));
    }
    entries.push((format!("{archive}/version"), b"3\n".to_vec()));
    zip_stored(&entries)
}

// Pickle opcodes (protocol 2).
const PROTO: u8 = 0x80;
const GLOBAL: u8 = b'c';
const EMPTY_TUPLE: u8 = b')';
const REDUCE: u8 = b'R';
const MARK: u8 = b'(';
const TUPLE: u8 = b't';
const SETITEMS: u8 = b'u';
const BINUNICODE: u8 = b'X';
const BININT: u8 = b'J';
const BINPERSID: u8 = b'Q';
const NEWFALSE: u8 = 0x89;
const STOP: u8 = b'.';

fn pickle(tensors: &NamedTensors) -> Vec<u8> {
    let mut p = vec![PROTO, 2];
    let global = |p: &mut Vec<u8>, module: &str, name: &str| {
        p.push(GLOBAL);
        p.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    };
    let text = |p: &mut Vec<u8>, s: &str| {
        p.push(BINUNICODE);
        p.extend_from_slice(&(s.len() as u32).to_le_bytes());
        p.extend_from_slice(s.as_bytes());
    };
    let int = |p: &mut Vec<u8>, v: usize| {
        p.push(BININT);
        p.extend_from_slice(&(v as i32).to_le_bytes());
    };
    let ordered_dict = |p: &mut Vec<u8>| {
        global(p, "collections", "OrderedDict");
        p.extend_from_slice(&[EMPTY_TUPLE, REDUCE]);
    };
    ordered_dict(&mut p);
    p.push(MARK);
    for (key, t) in tensors.iter().enumerate() {
        text(&mut p, &t.name);
        global(&mut p, "torch._utils", "_rebuild_tensor_v2");
        p.push(MARK);
        p.push(MARK);
        text(&mut p, "storage");
        global(&mut p, "torch", "FloatStorage");
        text(&mut p, &key.to_string());
        text(&mut p, "cpu");
        int(&mut p, t.values.len());
        p.extend_from_slice(&[TUPLE, BINPERSID]);
        int(&mut p, 0);
        p.push(MARK);
        for &d in &t.shape {
            int(&mut p, d);
        }
        p.push(TUPLE);
        p.push(MARK);
        let mut stride = 1;
        let mut strides = vec![0; t.shape.len()];
        for (i, &d) in t.shape.iter().enumerate().rev() {
            strides[i] = stride;
            stride *= d;
        }
        for s in strides {
            int(&mut p, s);
        }
        p.push(TUPLE);
        p.push(NEWFALSE);
        ordered_dict(&mut p);
        p.extend_from_slice(&[TUPLE, REDUCE]);
    }
    p.extend_from_slice(&[SETITEMS, STOP]);
    p
}

/// A zip archive of uncompressed entries, each entry's data 64-byte aligned (padding in an extra
/// field, as torch writes it).
fn zip_stored(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let mut crc = flate2::Crc::new();
        crc.update(data);
        let crc = crc.sum();
        let offset = out.len() as u32;
        let header_len = 30 + name.len() + 4;
        let pad = (64 - (out.len() + header_len) % 64) % 64;
        let le16 = |v: usize| (v as u16).to_le_bytes();
        let le32 = |v: u32| v.to_le_bytes();
        let common = |buf: &mut Vec<u8>| {
            buf.extend_from_slice(&le16(20)); // version needed
            buf.extend_from_slice(&le16(0)); // flags
            buf.extend_from_slice(&le16(0)); // stored
            buf.extend_from_slice(&le16(0)); // time
            buf.extend_from_slice(&le16(0x21)); // date (1980-01-01)
            buf.extend_from_slice(&le32(crc));
            buf.extend_from_slice(&le32(data.len() as u32));
            buf.extend_from_slice(&le32(data.len() as u32));
            buf.extend_from_slice(&le16(name.len()));
        };
        out.extend_from_slice(&le32(0x0403_4b50));
        common(&mut out);
        out.extend_from_slice(&le16(4 + pad));
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&le16(0x4246)); // "FB": torch's padding record
        out.extend_from_slice(&le16(pad));
        out.extend(std::iter::repeat_n(b'Z', pad));
        out.extend_from_slice(data);

        central.extend_from_slice(&le32(0x0201_4b50));
        central.extend_from_slice(&le16(20)); // version made by
        common(&mut central);
        central.extend_from_slice(&le16(0)); // extra
        central.extend_from_slice(&le16(0)); // comment
        central.extend_from_slice(&le16(0)); // disk
        central.extend_from_slice(&le16(0)); // internal attributes
        central.extend_from_slice(&le32(0)); // external attributes
        central.extend_from_slice(&le32(offset));
        central.extend_from_slice(name.as_bytes());
    }
    let (cd_offset, cd_len) = (out.len() as u32, central.len() as u32);
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&cd_len.to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}
