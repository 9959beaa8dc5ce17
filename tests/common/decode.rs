//! Decoders for the audio Wick sends, for tests: symphonia for mp3, flac, wav and aac; libopus for
//! Ogg Opus. Used by src/audio's unit tests and by the HTTP tests (one copy, included by both).
#![allow(dead_code)]

/// Decodes a whole file with symphonia: (sample rate, mono samples). `ext` is the probe's hint.
pub fn decode_symphonia(bytes: Vec<u8>, ext: &str) -> (u32, Vec<f32>) {
    use symphonia::core::audio::SampleBuffer;
    use symphonia::core::codecs::DecoderOptions;
    use symphonia::core::errors::Error;
    use symphonia::core::formats::FormatOptions;
    use symphonia::core::io::MediaSourceStream;
    use symphonia::core::meta::MetadataOptions;
    use symphonia::core::probe::Hint;

    let mss = MediaSourceStream::new(Box::new(std::io::Cursor::new(bytes)), Default::default());
    let mut hint = Hint::new();
    hint.with_extension(ext);
    let probed = symphonia::default::get_probe()
        .format(&hint, mss, &FormatOptions::default(), &MetadataOptions::default())
        .expect("probe");
    let mut reader = probed.format;
    let track = reader.default_track().expect("a track");
    let params = track.codec_params.clone();
    assert_eq!(params.channels.map(|c| c.count()), Some(1), "mono");
    let mut decoder = symphonia::default::get_codecs().make(&params, &DecoderOptions::default()).expect("decoder");
    let mut samples = Vec::new();
    loop {
        let packet = match reader.next_packet() {
            Ok(p) => p,
            // The readers report the end of the stream as an unexpected EOF.
            Err(Error::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("reading: {e}"),
        };
        let decoded = decoder.decode(&packet).expect("decoding");
        let mut buf = SampleBuffer::<f32>::new(decoded.capacity() as u64, *decoded.spec());
        buf.copy_interleaved_ref(decoded);
        samples.extend_from_slice(buf.samples());
    }
    let rate = decoder.codec_params().sample_rate.or(params.sample_rate).expect("a sample rate");
    (rate, samples)
}

/// Decodes Ogg Opus the way a player does: libopus at 48 kHz, pre-skip dropped, cut at the
/// last granule position. Checks the headers and that each page's granule position is the
/// number of samples decoded up to it. Returns the playable samples.
pub fn decode_ogg_opus(bytes: Vec<u8>) -> Vec<f32> {
    let mut reader = ogg::PacketReader::new(std::io::Cursor::new(bytes));
    let head = reader.read_packet_expected().unwrap();
    assert!(head.first_in_stream() && head.last_in_page());
    assert_eq!(&head.data[..8], b"OpusHead");
    assert_eq!((head.data[8], head.data[9]), (1, 1), "version 1, mono");
    let pre_skip = usize::from(u16::from_le_bytes([head.data[10], head.data[11]]));
    let tags = reader.read_packet_expected().unwrap();
    assert!(tags.last_in_page());
    assert_eq!(&tags.data[..8], b"OpusTags");

    let mut dec = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
    let mut pcm = Vec::new();
    let mut end = None;
    while let Some(p) = reader.read_packet().unwrap() {
        assert!(end.is_none(), "a packet after the end of stream");
        let mut buf = [0f32; 5760];
        let n = dec.decode_float(&p.data, &mut buf, false).unwrap();
        pcm.extend_from_slice(&buf[..n]);
        if p.last_in_stream() {
            end = Some(p.absgp_page() as usize);
        } else if p.last_in_page() {
            assert_eq!(p.absgp_page() as usize, pcm.len(), "granule position");
        }
    }
    let end = end.expect("an end of stream");
    assert!(end <= pcm.len() && end >= pre_skip);
    pcm[pre_skip..end].to_vec()
}
