pub mod mandarin;
